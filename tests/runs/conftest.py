"""A coordinator on loopback for run tests: the real Runs service, store and driver on a real
Redis, with the family test double as its generator and verifier (tests/runs/fakes.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
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
    """The run's status once it is final (or `until(status)` holds); fails after timeout.
    UNAVAILABLE is retried: right after a coordinator restart on the same port, this
    process's gRPC connection to it may still be in its reconnect backoff."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = client.get(run_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if until(status) if until else status.state in FINAL:
            return status
        assert time.monotonic() < deadline, f"run {run_id} still {status.state}: {status}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def family_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the product family's tokenizer (learns nothing)."""
    from astro_core.models.tiny import TinyModelSpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("family"), TinyModelSpec(family="product"))


WARM_PROBLEMS = "synth:product?n=8&seed=0"  # a run searching n<=8, seed 0 searches these


@pytest.fixture(scope="session")
def warm_model(tmp_path_factory: pytest.TempPathFactory, family_model: Path) -> Path:
    """The family model after 80 SFT steps (real `astro train sft`) on noisy one-guess
    solutions of WARM_PROBLEMS: it writes the family's steps and answers right about a third
    of the time, so a search of those problems finds correct and incorrect terminals."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from astro_core.synthetic import parse_synth_spec, sample_problems, warmup_records
    from tests.conftest import REPO

    folder = tmp_path_factory.mktemp("warm")
    spec = parse_synth_spec(WARM_PROBLEMS)
    records = warmup_records(sample_problems(spec.n, spec.seed), 40, 0, 0.15)
    data = folder / "warm.jsonl"
    with data.open("w") as handle:
        for record in records:
            if str(record["problem_id"]).startswith("product/"):  # solutions, not facts
                handle.write(json.dumps(record) + "\n")
    config = {
        "model": str(family_model),
        "dataset": str(data),
        "output_dir": str(folder / "sft"),
        "learning_rate": 3.0e-3,
        "max_length": 256,
        "per_device_train_batch_size": 16,
        "packing": False,
        "save_steps": 0,
        "max_steps": 80,
        "bf16": False,
    }
    (folder / "sft.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "astro_cli.main", "train", "sft"]
    subprocess.run(
        [*command, "--config", str(folder / "sft.yaml")],
        check=True, env=env, cwd=REPO, capture_output=True, timeout=600,
    )  # fmt: skip
    return folder / "sft" / "checkpoint-80" / "model"
