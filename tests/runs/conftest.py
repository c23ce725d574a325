"""A coordinator on loopback for run tests: the real Runs service, store and driver on a real
Redis, with the family test double as its generator and verifier (tests/runs/fakes.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astro_core.config import deep_merge
from services.coordinator.runs.client import RunsClient
from services.testing import ServiceThread

FAST = {
    "backends": "tests.runs.fakes:family_backends",
    "default_preset": "tiny",
    "poll_seconds": 0.1,
    "heartbeat_seconds": 0.3,
    "reclaim_idle_seconds": 2.0,
    "stage_retries": 0,
}


@dataclass
class Coordinator:
    service: ServiceThread
    client: RunsClient
    data_dir: Path
    redis_url: str

    @property
    def address(self) -> str:
        return self.service.address


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    from services.runtime.redis_store import connect_redis

    handle = connect_redis(url=None, directory=tmp_path / "redis")
    try:
        yield handle.url
    finally:
        handle.close()


@pytest.fixture
def start_coordinator(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Coordinator]]:
    """Start coordinators (settings over FAST); all are stopped at the end."""
    from services.coordinator.server import register
    from services.runtime.config import ServiceConfig

    started: list[Coordinator] = []

    def start(service: dict[str, Any] | None = None, **settings: Any) -> Coordinator:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        config = ServiceConfig(
            port=0,
            metrics_port=None,
            grace_seconds=1,
            data_dir=str(data_dir),
            redis_url=redis_url,
            settings=deep_merge(FAST, settings),
            **(service or {}),
        )
        thread = ServiceThread("coordinator", register, config).start()
        client = RunsClient(thread.client_config(auth=config.auth))
        coordinator = Coordinator(thread, client, data_dir, redis_url)
        started.append(coordinator)
        return coordinator

    try:
        yield start
    finally:
        for coordinator in reversed(started):
            coordinator.client.close()
            coordinator.service.stop()


@pytest.fixture
def coordinator(start_coordinator: Callable[..., Coordinator]) -> Coordinator:
    return start_coordinator()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder that passes the model check (the family double never loads it)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


FINAL = ("succeeded", "failed", "cancelled")


def wait_for(
    client: RunsClient,
    run_id: str,
    timeout: float = 60.0,
    until: Callable[[Any], bool] | None = None,
) -> Any:
    """The run's status once it is final (or `until(status)` holds); fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(run_id)
        if until(status) if until else status.state in FINAL:
            return status
        assert time.monotonic() < deadline, f"run {run_id} still {status.state}: {status}"
        time.sleep(0.1)
