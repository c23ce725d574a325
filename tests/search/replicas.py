"""Coordinator replicas as real processes (`astro serve coordinator`, scripted backends) on one
Redis, and the gRPC steps tests take with them: start a search, wait for it, export its trees,
find which replica holds a task. Used by tests/search/test_replicas.py and the kill -9 test in
tests/test_reliability.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from astro_core.trees import SearchTree
from services.coordinator.convert import tree_from_proto
from services.coordinator.jobs import GROUP, TASKS
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig
from tests.runs.replica import CoordinatorProcess

# Short heartbeats and reclaim period: a dead replica's tasks are taken over within seconds.
REPLICA_SETTINGS = {
    "backends": "tests.search.fakes:scripted_backends",
    "default_preset": "tiny",
    "max_active_trees": 2,
    "reclaim_idle_seconds": 2.0,
    "heartbeat_seconds": 0.3,
    "poll_seconds": 0.1,
}

StartReplica = Callable[[str, float], CoordinatorProcess]


@contextmanager
def coordinator_replicas(directory: Path, redis_url: str) -> Iterator[StartReplica]:
    """Yields start(name, delay): a replica whose every generate call takes `delay` seconds.
    Every replica started is stopped on the way out."""
    started: list[CoordinatorProcess] = []

    def start(name: str, delay: float) -> CoordinatorProcess:
        env = {"ASTRO_FAKE_GENERATE_DELAY": str(delay)}
        replica = CoordinatorProcess(
            directory, name, redis_url, REPLICA_SETTINGS, directory / "data", env
        )
        started.append(replica)
        return replica

    try:
        yield start
    finally:
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


def exported_trees(stub: SearchCoordinatorStub, sid: str) -> list[SearchTree]:
    return [
        tree_from_proto(t) for t in stub.ExportTrees(search_pb2.GetSearchRequest(search_id=sid))
    ]


def consumer_of(client: redis.Redis, pid: int) -> str | None:
    """The name of the task-stream consumer that process `pid` reads as."""
    for consumer in client.xinfo_consumers(TASKS, GROUP):
        if f"-{pid}-" in consumer["name"]:
            return str(consumer["name"])
    return None
