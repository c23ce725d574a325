"""kill -9 of a real coordinator process mid-run: another one resumes the run at the stage it
was in, and the stages already done are not run again (their files unchanged, byte for
byte)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.client import RunsClient
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
    first = CoordinatorProcess(tmp_path, "first", redis_url, settings, data_dir, slow)
    second = None
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
        status = wait_for(client, rid, until=lambda s: s.stage == "clone", timeout=120)
        trees = status.artifacts["search.trees"]
        before = sha256(trees)
        search_finished = status.stages[0].finished_unix
        time.sleep(0.5)  # into the clone's self-evaluation votes
        first.kill()
        client.close()
        second = CoordinatorProcess(tmp_path, "second", redis_url, settings, data_dir, slow)
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
        client.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
