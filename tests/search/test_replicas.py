"""Coordinator replicas as real processes on one Redis: they share a job's tasks, and when one
is killed with SIGKILL mid-search the other takes its tasks over and finishes from the stored
trees, losing no node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from services.coordinator.jobs import GROUP, TASKS, JobStore
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig
from tests.conftest import REPO
from tests.search.invariants import check_tree

pytestmark = pytest.mark.slow


class Replica:
    """`astro serve coordinator` in a child process, searching with the scripted backends."""

    def __init__(self, directory: Path, name: str, redis_url: str, delay: float) -> None:
        self.ready = directory / f"{name}.ready.json"
        config = {
            "port": 0,
            "metrics_port": None,
            "grace_seconds": 1,
            "redis_url": redis_url,
            "ready_file": str(self.ready),
            "settings": {
                "backends": "tests.search.fakes:scripted_backends",
                "default_preset": "tiny",
                "max_active_trees": 2,
                "reclaim_idle_seconds": 2.0,
                "heartbeat_seconds": 0.3,
                "poll_seconds": 0.1,
            },
        }
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "ASTRO_FAKE_GENERATE_DELAY": str(delay)}
        self.log = (directory / f"{name}.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "astro_cli.main",
            "serve",
            "coordinator",
            "--config",
            str(path),
        ]
        self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=self.log)

    def address(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.process.poll() is None, "replica exited during start"
            assert time.monotonic() < deadline, "replica did not start"
            time.sleep(0.05)
        return str(json.loads(self.ready.read_text())["address"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def replicas(tmp_path: Path, search_redis_url: str) -> Iterator[list[Replica]]:
    started: list[Replica] = []

    def start(name: str, delay: float) -> Replica:
        replica = Replica(tmp_path, name, search_redis_url, delay)
        started.append(replica)
        return replica

    yield start  # type: ignore[misc]
    for replica in started:
        replica.stop()


def stub_for(address: str) -> SearchCoordinatorStub:
    return SearchCoordinatorStub(sync_channel(ClientConfig(address=address), default_timeout=30))


def start_search(
    stub: SearchCoordinatorStub, count: int, iterations: int, max_depth: int = 4
) -> str:
    problems = [
        common_pb2.Problem(id=f"q{i}", problem=f"What is {i} / {i}?", answer="1")
        for i in range(count)
    ]
    request = search_pb2.StartSearchRequest(
        problems=problems,
        preset="tiny",
        config_yaml=f"iterations: {iterations}\nmax_depth: {max_depth}",
    )
    return str(stub.StartSearch(request).search_id)


def wait_succeeded(stub: SearchCoordinatorStub, sid: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
        if status.state != "running":
            assert status.state == "succeeded", status.message
            return
        assert time.monotonic() < deadline, f"search stuck at {status}"
        time.sleep(0.2)


def consumer_of(client: redis.Redis, pid: int) -> str | None:
    for consumer in client.xinfo_consumers(TASKS, GROUP):
        if f"-{pid}-" in consumer["name"]:
            return str(consumer["name"])
    return None


def test_two_replicas_share_a_job_without_duplicates(replicas, search_redis_url: str) -> None:  # type: ignore[no-untyped-def]
    a, b = replicas("a", 0.05), replicas("b", 0.05)
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


def test_sigkilled_replica_search_is_resumed_by_another_nothing_lost_or_duplicated(  # type: ignore[no-untyped-def]
    replicas, search_redis_url: str
) -> None:
    """Reliability: replica A (`astro serve coordinator`, a real process) is killed with
    SIGKILL mid-search; replica B takes its tasks over and the search completes. Each problem
    is finished exactly once, every node A stored is kept, none is duplicated, and every
    tree satisfies the search's invariants (tests/search/invariants.py)."""
    client = redis.Redis.from_url(search_redis_url, decode_responses=True)
    jobs = JobStore(client)
    # A is slow and its trees deep enough to generate every round: it is still mid-search
    # however long B takes to start on a busy machine
    a = replicas("a", 0.5)
    stub = stub_for(a.address())
    iterations = 30
    sid = start_search(stub, count=4, iterations=iterations, max_depth=16)
    # wait until A is mid-search: its two trees have been backed up at least twice
    deadline = time.monotonic() + 60
    while True:
        roots = [jobs.tree(sid, i) for i in range(4)]
        grown = [t for t in roots if t is not None and t.by_id()["0"].visits >= 2]
        if len(grown) >= 2:
            break
        assert time.monotonic() < deadline, "replica A made no progress"
        time.sleep(0.1)
    b = replicas("b", 0.05)
    stub_b = stub_for(b.address())
    name_a = consumer_of(client, a.process.pid)
    assert name_a is not None
    held = {p["message_id"] for p in client.xpending_range(TASKS, GROUP, "-", "+", 10, name_a)}
    assert held, "A holds no task"
    entries: list = [e for m in held for e in client.xrange(TASKS, m, m) or []]  # type: ignore[type-arg]
    held_indices = {int(fields["index"]) for _, fields in entries}
    # freeze A, take what exists, then kill it: the snapshot is everything A ever wrote
    os.kill(a.process.pid, signal.SIGSTOP)
    before = {i: jobs.tree(sid, i) for i in range(4)}
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    wait_succeeded(stub_b, sid)
    finished_by = jobs.finished_by(sid)
    assert sorted(finished_by) == [0, 1, 2, 3]  # each problem finished, once
    assert all(finished_by[i] != name_a for i in held_indices)  # B took A's tasks over
    counters = client.hgetall(f"astro:search:job:{sid}:counters")
    assert (counters["problems_done"], counters["solved"]) == ("4", "4")  # counted once
    assert jobs.status(sid).problems_done == 4
    exported = tree_from(stub_b, sid)
    trees = {t.problem_id: t for t in exported}
    assert len(exported) == len(trees) == 4
    config = jobs.config(sid)
    for tree_before in before.values():
        if tree_before is None:
            continue
        after = trees[tree_before.problem_id].by_id()
        for node in tree_before.nodes:  # nothing A wrote was lost or rewritten
            assert node.id in after, node.id
            assert (after[node.id].text, after[node.id].parent) == (node.text, node.parent)
    for tree in trees.values():
        # resumed, not restarted, not overdone: root visits = iterations, k children per
        # expansion (no expansion redone), Q = the backup formula everywhere
        check_tree(config, tree, gold="1")
        assert tree.by_id()["0"].visits == iterations
    assert len(client.xpending_range(TASKS, GROUP, "-", "+", 10, name_a)) == 0
    left = [f for _, f in client.xrange(TASKS) if f["sid"] == sid]
    assert left == []  # every task acknowledged and deleted


def tree_from(stub: SearchCoordinatorStub, sid: str) -> list:  # type: ignore[type-arg]
    from services.coordinator.convert import tree_from_proto

    return [
        tree_from_proto(t) for t in stub.ExportTrees(search_pb2.GetSearchRequest(search_id=sid))
    ]
