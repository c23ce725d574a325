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


def test_a_tiny_run_succeeds_with_every_artifact(platform: Platform, warm_model: Path) -> None:
    spec = RunSpec.model_validate(
        {
            "name": "tiny end to end",
            "stages": ["search", "clone", "sft"],
            "base_model": str(warm_model),
            "problems_path": "synth:product?n=4&seed=0",
            "config": {
                "search": SEARCH,
                "clone": {"preset": "cpu", "self_eval": False},
                "sft": SFT,
            },
        }
    )
    rid = platform.runs.start(spec).run_id
    status = wait_for(platform.runs, rid, timeout=600)
    assert status.state == "succeeded", status.message
    stages = {s.name: s for s in status.stages}
    out = Path(status.output_dir)
    # search: every tree, with correct and incorrect terminals
    trees = [json.loads(line) for line in Path(status.artifacts["search.trees"]).open()]
    assert len(trees) == 4 == stages["search"].metrics["trees"]
    assert stages["search"].metrics["trees_with_correct_and_incorrect"] >= 1
    # clone: traces of the trees that have a correct terminal
    traces = Path(status.artifacts["clone.traces"])
    assert stages["clone"].metrics["traces"] == len(traces.read_text().splitlines()) > 0
    # sft: checkpoints registered under the run's name, the log written
    name = f"run-{rid}-sft"
    versions = sorted(platform.registry.list(name=name), key=lambda c: c.version)
    assert [c.step for c in versions] == [2, 4]
    assert stages["sft"].artifacts["checkpoint"] == versions[-1].ref
    assert all(c.stage == "sft" for c in versions)
    assert Path(stages["sft"].artifacts["train_log"]).is_file()
    # every file artifact exists, inside the run's folder, with its recorded sha256
    for key, value in status.artifacts.items():
        if value.startswith("/"):
            assert Path(value).exists() and Path(value).is_relative_to(out), key
