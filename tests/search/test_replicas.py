"""Coordinator replicas as real processes on one Redis share a job's tasks. (kill -9 of one
mid-search, and another taking its tasks over, is in tests/test_reliability.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from services.coordinator.jobs import JobStore
from tests.search.replicas import coordinator_replicas, start_search, stub_for, wait_succeeded

pytestmark = pytest.mark.slow


def test_two_replicas_share_a_job_without_duplicates(tmp_path: Path, search_redis_url: str) -> None:
    with coordinator_replicas(tmp_path, search_redis_url) as start:
        a, b = start("a", 0.05), start("b", 0.05)
        stub = stub_for(a.address())
        b.address()
        sid = start_search(stub, count=6, iterations=3)
        wait_succeeded(stub, sid)
        jobs = JobStore(redis.Redis.from_url(search_redis_url, decode_responses=True))
        finished_by = jobs.finished_by(sid)
        assert sorted(finished_by) == list(range(6))
        assert len(set(finished_by.values())) == 2  # both replicas finished problems
        status = jobs.status(sid)
        assert status.problems_done == 6
        for index in range(6):
            tree = jobs.tree(sid, index)
            assert tree is not None
            tree.validate()
            # the tree was searched by one replica only: exactly `iterations` backups at the root
            assert tree.by_id()["0"].visits == 3 and tree.stats["iterations"] == 3
