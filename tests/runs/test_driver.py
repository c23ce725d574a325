"""The run driver with stand-in stage runners (TEST DOUBLES of stage work) on a real Redis:
stage order, failures, retries, inputs changed behind a run's back, resuming a run a dead
replica held, handing runs back on a graceful stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from astro_core.pipeline.spec import RunSpec
from services.coordinator.jobs import JobStore
from services.coordinator.runs.context import StageContext, StageFailed, StageResult, sha256_file
from services.coordinator.runs.driver import RunDriver
from services.coordinator.runs.stages import StageServices
from services.coordinator.runs.store import GROUP, QUEUE, RunStore, StageRecord
from services.coordinator.settings import CoordinatorSettings

SETTINGS = CoordinatorSettings(
    poll_seconds=0.05, heartbeat_seconds=0.1, reclaim_idle_seconds=0.5, stage_retry_seconds=0
)


@pytest.fixture
def store(redis_url: str) -> RunStore:
    import redis

    return RunStore(redis.Redis.from_url(redis_url, decode_responses=True))


class Stages:
    """Runners for search and clone that write a file each and count their calls."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.calls: list[tuple[str, int]] = []
        self.behaviour: dict[str, Callable[[StageContext], None]] = {}

    def runner(self, ctx: StageContext, _svc: StageServices) -> StageResult:
        self.calls.append((ctx.stage.name, ctx.attempt))
        if ctx.stage.name in self.behaviour:
            self.behaviour[ctx.stage.name](ctx)
        path = ctx.stage_dir / "out.txt"
        path.write_text(f"{ctx.stage.name} {ctx.attempt}")
        return StageResult({"out": str(path)}, {"attempt": float(ctx.attempt)})


@pytest.fixture
def stages(tmp_path: Path) -> Stages:
    return Stages(tmp_path)


@pytest.fixture
def drivers(store: RunStore, stages: Stages) -> Iterator[Callable[..., RunDriver]]:
    made: list[RunDriver] = []

    def make(**settings: object) -> RunDriver:
        services = StageServices(JobStore(store.client), SETTINGS)
        driver = RunDriver(
            store,
            services,
            SETTINGS.model_copy(update=settings),
            stage_runners={"search": stages.runner, "clone": stages.runner},
        )
        driver.start()
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.stop(timeout=5)


def new_run(store: RunStore, out: Path, rid: str = "c000000000000001") -> str:
    spec = RunSpec(stages=["search", "clone"], base_model="m/x", problems_path="p.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    stages = [
        StageRecord("search", "search", inputs={}),
        StageRecord("clone", "clone", inputs={"trees": "search.out"}),
    ]
    store.create(
        rid, name="t", spec_json=spec.model_dump_json(), output_dir=str(out), stages=stages
    )
    return rid


def wait_state(store: RunStore, rid: str, states: tuple[str, ...], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while store.state(rid) not in states:
        assert time.monotonic() < deadline, f"run still {store.state(rid)}"
        time.sleep(0.05)


def test_stages_run_in_order_once(store, stages, drivers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rid = new_run(store, tmp_path / "run")
    drivers()
    wait_state(store, rid, ("succeeded",))
    assert stages.calls == [("search", 1), ("clone", 1)]
    record = store.get(rid)
    assert record is not None
    assert record.artifacts() == {
        "search.out": str(tmp_path / "run" / "search" / "out.txt"),
        "clone.out": str(tmp_path / "run" / "clone" / "out.txt"),
    }
    assert set(record.stage_record("search").digests) == {"out"}
    assert not store.client.xpending(QUEUE, GROUP)["pending"]


def test_a_failing_stage_fails_the_run_and_keeps_earlier_artifacts(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    def fail(ctx: StageContext) -> None:
        raise StageFailed("traces.jsonl:3: not valid JSON")

    stages.behaviour["clone"] = fail
    rid = new_run(store, tmp_path / "run")
    drivers()
    wait_state(store, rid, ("failed",))
    record = store.get(rid)
    assert record is not None
    assert record.message == "clone: traces.jsonl:3: not valid JSON"
    assert record.stage_record("clone").state == "failed"
    assert record.artifacts() == {"search.out": str(tmp_path / "run" / "search" / "out.txt")}
    assert (tmp_path / "run" / "search" / "out.txt").read_text() == "search 1"


def test_a_transient_error_starts_the_stage_again(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    def flaky(ctx: StageContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("generator unreachable")

    stages.behaviour["clone"] = flaky
    rid = new_run(store, tmp_path / "run")
    drivers(stage_retries=1)
    wait_state(store, rid, ("succeeded",))
    assert stages.calls == [("search", 1), ("clone", 1), ("clone", 2)]
    record = store.get(rid)
    assert record is not None and record.stage_record("clone").attempts == 2


def test_a_bug_in_a_stage_fails_the_run_after_the_retries(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    def bug(ctx: StageContext) -> None:
        raise KeyError("nope")

    stages.behaviour["search"] = bug
    rid = new_run(store, tmp_path / "run")
    drivers(stage_retries=1)
    wait_state(store, rid, ("failed",))
    record = store.get(rid)
    assert record is not None
    assert record.message == "search: KeyError: 'nope'"
    assert stages.calls == [("search", 1), ("search", 2)]


def finished_search(store: RunStore, rid: str, out: Path, text: str) -> Path:
    """Record the run as a replica that finished search and then died would leave it."""
    store.queue.ensure_group()
    claimed = store.queue.claim("dead-replica", 1, 60_000, None)
    assert [fields["run_id"] for _, fields in claimed] == [rid]
    store.start_run(rid)
    store.begin_stage(rid, "search")
    path = out / "search" / "out.txt"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    store.finish_stage(rid, "search", {"out": str(path)}, {}, {"out": sha256_file(path)})
    return path


def test_an_input_changed_after_its_stage_recorded_it_fails_the_next_stage(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    rid = new_run(store, tmp_path / "run")
    path = finished_search(store, rid, tmp_path / "run", "trees")
    path.write_text("trees, edited")
    drivers()
    wait_state(store, rid, ("failed",))
    record = store.get(rid)
    assert record is not None
    assert record.message == (
        f"clone: input search.out ({path}) changed after it was recorded (sha256 differs)"
    )
    assert stages.calls == []


def test_a_run_held_by_a_dead_replica_resumes_at_its_stage(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    rid = new_run(store, tmp_path / "run")
    path = finished_search(store, rid, tmp_path / "run", "by the dead replica")
    store.begin_stage(rid, "clone")  # ... and had started clone
    drivers()
    wait_state(store, rid, ("succeeded",))
    assert stages.calls == [("clone", 2)]  # search was not run again
    assert path.read_text() == "by the dead replica"


def test_a_stopping_replica_hands_its_run_to_another_at_once(  # type: ignore[no-untyped-def]
    store, stages, drivers, tmp_path
) -> None:
    started = threading.Event()

    def slow(ctx: StageContext) -> None:
        if ctx.attempt == 1:
            started.set()
            while True:
                ctx.sleep(0.05)  # raises DriverStopping once the replica stops

    stages.behaviour["clone"] = slow
    rid = new_run(store, tmp_path / "run")
    first = drivers(reclaim_idle_seconds=3600)  # nobody reclaims: only a hand-back helps
    assert started.wait(20)
    first.stop(timeout=5)
    record = store.get(rid)
    assert record is not None and record.stage_record("clone").state == "running"
    drivers(reclaim_idle_seconds=3600)
    wait_state(store, rid, ("succeeded",))
    assert stages.calls == [("search", 1), ("clone", 1), ("clone", 2)]
