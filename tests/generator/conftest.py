"""Fixtures of the generator tests: a second tiny model and a real checkpoint registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astro_core.models.tiny import TinyModelSpec, build_tiny_model
from services.registry.client import RegistryClient
from services.registry.server import register as register_registry
from services.runtime.config import ServiceConfig
from services.runtime.redis_store import connect_redis
from services.testing import ServiceThread


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with other weights (seed 1), standing in for a newer checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-b"), TinyModelSpec(seed=1))


class CountingRegistryClient(RegistryClient):
    """The real registry client, counting pulls so tests can see the generator's cache."""

    pulls = 0

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        self.pulls += 1
        return super().pull(name, dest, version=version, alias=alias)


@dataclass
class Registry:
    service: ServiceThread
    client: CountingRegistryClient

    @property
    def address(self) -> str:
        return self.service.address


@pytest.fixture()
def registry(tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path) -> Iterator[Registry]:
    """The registry service on loopback over an embedded Redis, holding `tiny:1` (the session
    tiny model, alias "base") and `tiny:2` (other weights, stage sft, alias "sft")."""
    redis = connect_redis(url=None, directory=tmp_path / "redis")
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis.url,
        grace_seconds=0.5,
        settings={"artifact_root": str(tmp_path / "artifacts")},
    )
    service = ServiceThread("registry", register_registry, config).start()
    client = CountingRegistryClient(service.client_config())
    try:
        client.register("tiny", tiny_model_dir, aliases=["base"])
        client.register("tiny", other_model_dir, stage="sft", aliases=["sft"])
        yield Registry(service, client)
    finally:
        client.close()
        service.stop()
        redis.close()
