"""kill -9 of a real coordinator process mid-run: another one resumes the run at the stage it
was in, and the stages already done are not run again (their files unchanged, byte for
byte)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.client import RunsClient
from tests.conftest import free_port
from tests.runs.conftest import FAST, wait_for
from tests.runs.replica import CoordinatorProcess

pytestmark = pytest.mark.slow


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_kill_9_during_clone_resumes_clone_and_keeps_the_search(
    tmp_path: Path, redis_url: str, model_dir: Path
) -> None:
    settings = {**FAST, "reclaim_idle_seconds": 1.5}
    data_dir = tmp_path / "data"
    slow = {"ASTRO_FAKE_GENERATE_DELAY": "0.3"}
    port = free_port()  # the restarted coordinator answers where the first did
    first = CoordinatorProcess(tmp_path, "first", redis_url, settings, data_dir, slow, port)
    second = None
    followed: list[str] = []
    follower: threading.Thread | None = None
    try:
        client = RunsClient(first.address())
        spec = RunSpec.model_validate(
            {
                "stages": ["search", "clone"],
                "base_model": str(model_dir),
                "problems_path": "synth:product?n=4&seed=3",
                "direct_control": True,
                "config": {"search": {"iterations": 2}, "clone": {"self_eval_votes": 2}},
            }
        )
        rid = client.start(spec).run_id

        def follow() -> None:  # one client following the run across the restart
            with RunsClient(f"127.0.0.1:{port}") as watcher:
                followed.extend(e.event_id for e in watcher.follow(rid, reconnect_seconds=90))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        status = wait_for(client, rid, until=lambda s: s.stage == "clone", timeout=120)
        trees = status.artifacts["search.trees"]
        before = sha256(trees)
        search_finished = status.stages[0].finished_unix
        time.sleep(0.5)  # into the clone's self-evaluation votes
        first.kill()
        client.close()
        second = CoordinatorProcess(tmp_path, "second", redis_url, settings, data_dir, slow, port)
        client = RunsClient(second.address())
        status = wait_for(client, rid, timeout=120)
        assert status.state == "succeeded", status.message
        search, clone = status.stages[0], status.stages[1]
        assert (search.attempts, clone.attempts) == (1, 2)
        assert search.finished_unix == search_finished
        assert sha256(trees) == before
        assert status.artifacts["search.trees"] == trees
        assert Path(status.artifacts["clone.traces"]).stat().st_size > 0
        assert Path(status.artifacts["clone.direct_traces"]).stat().st_size > 0
        assert not list(Path(status.output_dir).rglob(".*.tmp-*")), "a half-written file"
        follower.join(30)
        assert [e.event_id for e in client.watch(rid)] == followed  # nothing lost or repeated
        client.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_kill_9_during_clone_and_again_during_sft(
    tmp_path: Path, redis_url: str, family_model: Path
) -> None:
    from astro_core.checkpoints.local import LocalCheckpointStore
    from tests.runs.test_training_stage import alive, trainer_pids

    registry = tmp_path / "registry"
    settings = {**FAST, "reclaim_idle_seconds": 1.5, "registry_address": str(registry)}
    data_dir = tmp_path / "data"
    slow = {"ASTRO_FAKE_GENERATE_DELAY": "0.3"}
    processes: list[CoordinatorProcess] = []

    def start(name: str) -> RunsClient:
        processes.append(CoordinatorProcess(tmp_path, name, redis_url, settings, data_dir, slow))
        return RunsClient(processes[-1].address())

    try:
        client = start("first")
        spec = RunSpec.model_validate(
            {
                "stages": ["search", "clone", "sft"],
                "base_model": str(family_model),
                "problems_path": "synth:product?n=3&seed=6",
                "config": {
                    "search": {"iterations": 2},
                    "clone": {"self_eval_votes": 2},
                    "sft": {"preset": "cpu", "max_length": 128, "max_steps": 30, "save_steps": 3},
                },
            }
        )
        rid = client.start(spec).run_id
        status = wait_for(client, rid, until=lambda s: s.stage == "clone", timeout=120)
        trees = status.artifacts["search.trees"]
        trees_hash = sha256(trees)
        time.sleep(0.5)
        processes[0].kill()  # 1: during clone
        client.close()

        client = start("second")
        name = f"run-{rid}-sft"
        store = LocalCheckpointStore(str(registry))

        def saved(_status: object) -> bool:
            try:
                return bool(store.list(name=name))
            except LookupError:
                return False

        status = wait_for(client, rid, until=saved, timeout=240)
        assert status.stages[2].state == "running"
        traces = status.artifacts["clone.traces"]
        traces_hash = sha256(traces)
        job_dir = data_dir / "jobs" / f"astro-sft-{rid}"
        pids = trainer_pids(job_dir)
        assert pids and all(alive(p) for p in pids)
        processes[1].kill()  # 2: during SFT
        client.close()
        deadline = time.monotonic() + 30
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)], "the trainer outlived its coordinator"

        client = start("third")
        status = wait_for(client, rid, timeout=240)
        assert status.state == "succeeded", status.message
        search, clone, sft = status.stages[:3]
        assert (search.attempts, clone.attempts, sft.attempts) == (1, 2, 2)
        assert sha256(trees) == trees_hash and sha256(traces) == traces_hash
        steps = [c.step for c in sorted(store.list(name=name), key=lambda c: c.version)]
        assert steps == sorted(set(steps)) and steps[-1] == 30, steps  # resumed, not redone
        assert sft.artifacts["checkpoint"] == f"{name}:{len(steps)}"
        jobs = sorted(p.name for p in (data_dir / "jobs").iterdir())
        assert len(jobs) == 2 and jobs[0] == f"astro-sft-{rid}"  # attempt 2 is a job of its own
        client.close()
    finally:
        for process in processes:
            process.stop()
