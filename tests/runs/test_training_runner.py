"""The training stage's runner against a TEST DOUBLE trainer backend (a Kubernetes API cannot
run here): the job it starts, following a Job of an earlier attempt instead of starting
another, cancel, and a failed job's reason."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.pipeline.plan import PlannedStage
from astro_core.pipeline.spec import RunSpec
from services.coordinator.jobs import JobStore
from services.coordinator.runs.context import StageCancelled, StageContext, StageFailed
from services.coordinator.runs.stages import StageServices
from services.coordinator.runs.store import RunStore, StageRecord
from services.coordinator.runs.training import run_training
from services.coordinator.settings import CoordinatorSettings
from services.jobs import JobHandle, JobStatus, TrainJob


@dataclass
class FakeBackend:
    """TEST DOUBLE TrainerBackend: jobs are records; each status call takes the next scripted
    state of the job (the last one repeats)."""

    name: str = "kubernetes"
    script: list[str] = field(default_factory=lambda: ["running", "succeeded"])
    started: list[TrainJob] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)

    def start(self, job: TrainJob) -> JobHandle:
        self.started.append(job)
        return JobHandle(self.name, job.name("astro"), "ml")

    def status(self, handle: JobHandle) -> JobStatus:
        if handle.name in self.cancelled:
            return JobStatus("cancelled", "Cancelled", "deleted")
        index = self.calls.get(handle.name, 0)
        self.calls[handle.name] = index + 1
        state = self.script[min(index, len(self.script) - 1)]
        if state == "failed":
            return JobStatus("failed", "BackoffLimitExceeded", "loss is nan", exit_code=1)
        return JobStatus(state)  # type: ignore[arg-type]

    def cancel(self, handle: JobHandle) -> JobStatus:
        self.cancelled.append(handle.name)
        return self.status(handle)


@pytest.fixture
def setup(tmp_path: Path, redis_url: str, family_model: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    store = RunStore(redis.Redis.from_url(redis_url, decode_responses=True))
    rid = "d000000000000001"
    out = tmp_path / "run"
    traces = out / "clone" / "traces.jsonl"
    traces.parent.mkdir(parents=True)
    traces.write_text("{}\n")
    spec = RunSpec.model_validate(
        {"stages": ["search", "clone", "sft"], "base_model": str(family_model),
         "problems_path": "synth:product?n=1", "config": {"sft": {"preset": "cpu"}}}
    )  # fmt: skip
    store.create(rid, name="", spec_json=spec.model_dump_json(), output_dir=str(out),
                 stages=[StageRecord("sft", "sft")])  # fmt: skip
    store.start_run(rid)
    registry = LocalCheckpointStore(str(tmp_path / "registry"))
    registry.register(f"run-{rid}-sft", family_model, stage="sft", step=7)
    settings = CoordinatorSettings(registry_address=str(tmp_path / "registry"))
    backend = FakeBackend()
    services = StageServices(
        JobStore(store.client), settings, trainer=lambda name: backend, registry=registry,
        redis_url=redis_url,
    )  # fmt: skip

    def context(handle: dict | None = None) -> StageContext:  # type: ignore[type-arg]
        attempt = store.begin_stage(rid, "sft")
        assert attempt is not None
        return StageContext(
            run_id=rid, stage=PlannedStage("sft", "sft", "", {"traces": "clone.traces",
                                                              "model": "input.base_model"}),
            attempt=attempt, spec=spec, output_dir=out, inputs={},
            artifacts={"clone.traces": str(traces)}, handle=handle or {}, store=store,
            interrupted=lambda: "cancelled" if store.state(rid) == "cancelled" else None,
        )  # fmt: skip

    yield context, services, backend, store, rid, out, traces


def test_a_job_gets_the_run_s_fields_and_no_redis_secret(
    setup: tuple,
    family_model: Path,  # type: ignore[type-arg]
) -> None:
    context, services, backend, _store, rid, out, traces = setup
    result = run_training(context(), services)
    (job,) = backend.started
    assert job.stage == "sft" and job.attempt == 0
    config = job.config
    assert config["model"] == str(family_model)
    assert config["dataset"] == str(traces)
    assert config["output_dir"] == str(out / "sft" / "train")
    assert config["output_name"] == f"run-{rid}-sft" and config["run_id"] == rid
    assert "redis_url" not in config  # a Job's pod has REDIS_URL; the config is in the Job
    assert config["learning_rate"] == 1.0e-3  # the cpu preset
    assert result.artifacts["checkpoint"] == f"run-{rid}-sft:1"
    assert result.metrics["steps"] == 7


def test_a_job_of_an_earlier_attempt_still_running_is_followed(setup: tuple) -> None:  # type: ignore[type-arg]
    context, services, backend, *_ = setup
    earlier = JobHandle("kubernetes", "astro-sft-earlier", "ml").to_dict()
    run_training(context({"job": earlier}), services)
    assert backend.started == []
    assert backend.calls["astro-sft-earlier"] >= 2


def test_a_gone_job_of_an_earlier_attempt_is_started_again(setup: tuple) -> None:  # type: ignore[type-arg]
    context, services, backend, *_ = setup
    context()  # attempt 1 ...
    backend.cancelled.append("astro-sft-gone")  # ... whose Job was deleted
    run_training(context({"job": JobHandle("kubernetes", "astro-sft-gone").to_dict()}), services)
    (job,) = backend.started
    assert job.attempt == 1 and job.name("astro").endswith(tuple("0123456789abcdef"))


def test_a_failed_job_fails_the_stage_with_its_reason(setup: tuple) -> None:  # type: ignore[type-arg]
    context, services, backend, *_ = setup
    backend.script = ["running", "failed"]
    with pytest.raises(
        StageFailed, match=r"trainer job astro-sft-\S+ failed: BackoffLimitExceeded: loss is nan"
    ):
        run_training(context(), services)


def test_cancel_deletes_the_job(setup: tuple) -> None:  # type: ignore[type-arg]
    context, services, backend, store, rid, *_ = setup
    backend.script = ["running"]
    ctx = context()
    store.cancel(rid)
    with pytest.raises(StageCancelled, match="trainer job .* cancelled"):
        run_training(ctx, services)
    assert len(backend.cancelled) == 1 and backend.cancelled[0] == backend.started[0].name("astro")
