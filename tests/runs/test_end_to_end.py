"""A whole run through gRPC on loopback with every real part: the registry, generator (HF
engine), verifier and coordinator services, trainer jobs as child processes (DeepSpeed on
CPU), a real Redis. A tiny model warm-started on the synthetic family (it need not learn
anything here) goes through every stage; the run succeeds with every artifact present and
every checkpoint registered, and the report written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.client import RunsClient
from services.registry.client import RegistryClient
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from tests.runs.conftest import wait_for

pytestmark = pytest.mark.slow


@dataclass
class Platform:
    coordinator: ServiceThread
    registry: RegistryClient
    runs: RunsClient
    data_dir: Path


@pytest.fixture
def platform(tmp_path: Path, redis_url: str, warm_model: Path) -> Iterator[Platform]:
    from services.coordinator.server import register as coordinator
    from services.generator.server import register as generator
    from services.registry.server import register as registry
    from services.verifier.server import register as verifier

    data_dir = tmp_path / "data"
    data_dir.mkdir()

    def config(**fields: object) -> ServiceConfig:
        return ServiceConfig(port=0, metrics_port=None, grace_seconds=1, **fields)  # type: ignore[arg-type]

    started: list[ServiceThread] = []
    try:
        reg = ServiceThread(
            "registry",
            registry,
            config(redis_url=redis_url, settings={"artifact_root": str(tmp_path / "artifacts")}),
        ).start()
        started.append(reg)
        gen = ServiceThread(
            "generator",
            generator,
            config(
                data_dir=str(data_dir),
                settings={"model": {"path": str(warm_model)}, "registry_address": reg.address},
            ),
        ).start()
        started.append(gen)
        ver = ServiceThread("verifier", verifier, config(settings={"workers": 1})).start()
        started.append(ver)
        coord = ServiceThread(
            "coordinator",
            coordinator,
            config(
                redis_url=redis_url,
                data_dir=str(data_dir),
                settings={
                    "generator_address": gen.address,
                    "verifier_address": ver.address,
                    "registry_address": reg.address,
                    "default_preset": "tiny",
                    "poll_seconds": 0.1,
                    "stage_retries": 0,
                },
            ),
        ).start()
        started.append(coord)
        with RegistryClient(reg.address) as store, RunsClient(coord.address) as runs:
            yield Platform(coord, store, runs, data_dir)
    finally:
        for service in reversed(started):
            service.stop()


# Small enough for two CPU cores; the search is wide enough that each tree of the warm model
# holds correct and incorrect terminals.
SEARCH = {"k": 3, "rollouts": 3, "iterations": 3, "max_depth": 3, "max_step_tokens": 40,
          "max_solution_tokens": 96, "temperature": 1.0, "top_p": 1.0}  # fmt: skip
SFT = {"preset": "cpu", "max_length": 256, "max_steps": 4, "save_steps": 2}


SELECT = {"num_samples": 8, "max_completion_length": 48}
GRPO = {"preset": "cpu", "policy_sync": "colocate", "max_steps": 2, "save_steps": 1,
        "per_device_train_batch_size": 8, "max_completion_length": 48}  # fmt: skip
EVAL = {"preset": "cpu", "n": 2, "max_tokens": 48, "pass_k": [1, 2]}


def test_a_tiny_run_succeeds_with_every_artifact(platform: Platform, warm_model: Path) -> None:
    spec = RunSpec.model_validate(
        {
            "name": "tiny end to end",
            "base_model": str(warm_model),
            "problems_path": "synth:product?n=4&seed=0",
            "eval_benchmarks": ["synth:product?split=heldout&n=3&seed=1"],
            "direct_control": True,
            "eval_checkpoints": ["base", "sft", "grpo:all", "direct_sft", "direct_grpo"],
            "config": {
                "search": SEARCH,
                "clone": {"preset": "cpu", "self_eval": False},
                "sft": SFT,
                "select_prompts": SELECT,
                "grpo": GRPO,
                "eval": EVAL,
            },
        }
    )
    rid = platform.runs.start(spec).run_id
    status = wait_for(platform.runs, rid, timeout=900)
    assert status.state == "succeeded", status.message
    stages = {s.name: s for s in status.stages}
    assert list(stages) == [
        "search", "clone", "sft", "sft_direct", "select_prompts", "grpo", "grpo_direct",
        "eval", "report",
    ]  # fmt: skip
    assert all(s.state == "succeeded" and s.attempts == 1 for s in status.stages)
    out = Path(status.output_dir)
    # search: every tree, some with correct and incorrect terminals
    trees = [json.loads(line) for line in Path(status.artifacts["search.trees"]).open()]
    assert len(trees) == 4 == stages["search"].metrics["trees"]
    assert stages["search"].metrics["trees_with_correct_and_incorrect"] >= 1
    heldout = {
        p["id"]
        for p in map(json.loads, (out / "inputs" / "eval").glob("*.jsonl").__next__().open())
    }
    assert not heldout & {t["problem_id"] for t in trees}
    # clone: ASTRO and direct traces of the same trees
    for kind in ("traces", "direct_traces"):
        lines = Path(status.artifacts[f"clone.{kind}"]).read_text().splitlines()
        assert len(lines) == stages["clone"].metrics[kind] > 0
    # each training stage registered its checkpoints under the run's name, in order
    for stage in ("sft", "sft_direct", "grpo", "grpo_direct"):
        name = f"run-{rid}-{stage}".replace("_", "-")
        versions = sorted(platform.registry.list(name=name), key=lambda c: c.version)
        assert versions, stage
        assert stages[stage].artifacts["checkpoint"] == versions[-1].ref
        assert stages[stage].artifacts["checkpoints"] == ",".join(c.ref for c in versions)
        assert {c.stage for c in versions} == {stage.split("_")[0]}
        assert Path(stages[stage].artifacts["train_log"]).is_file()
    # each arm's GRPO starts from that arm's SFT checkpoint, on the selected prompts
    import yaml

    for arm, job in [("", f"astro-grpo-{rid}"), ("_direct", f"astro-grpo-{rid}-direct")]:
        config = yaml.safe_load((platform.data_dir / "jobs" / job / "config.yaml").read_text())
        assert config["model"] == stages[f"sft{arm}"].artifacts["checkpoint"]
        assert config["dataset"] == stages["select_prompts"].artifacts["prompts"]
    sft_job = yaml.safe_load(
        (platform.data_dir / "jobs" / f"astro-sft-{rid}-direct" / "config.yaml").read_text()
    )
    assert sft_job["dataset"] == status.artifacts["clone.direct_traces"]
    assert "reward_mean" in stages["grpo"].metrics
    assert stages["select_prompts"].metrics["kept"] >= 1
    # eval: each checkpoint on the held-out set; the report
    labels = ["base", "sft", "grpo-step1", "grpo-step2", "direct_sft", "direct_grpo"]
    assert stages["eval"].artifacts["dirs"].split(",") == [
        stages["eval"].artifacts[label] for label in labels
    ]
    for label in labels:
        summary = json.loads((Path(stages["eval"].artifacts[label]) / "summary.json").read_text())
        (bench,) = summary["benchmarks"].values()
        assert bench["problems"] == 3 and bench["samples"] == 6
        assert (
            0.0
            <= stages["eval"].metrics[f"{label}.{next(iter(summary['benchmarks']))}.accuracy"]
            <= 1.0
        )
    report = Path(status.artifacts["report.html"])
    assert report.is_file() and "tiny end to end" in report.read_text()
    assert Path(status.artifacts["report.markdown"]).is_file()
    # every file artifact exists inside the run's folder
    for key, value in status.artifacts.items():
        for item in value.split(","):  # eval.dirs lists the eval folders
            if item.startswith("/"):
                assert Path(item).exists() and Path(item).is_relative_to(out), key
