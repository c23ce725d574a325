"""A real registry: the service on loopback over a real Redis (embedded and REDIS_URL)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astro_core.checkpoints import CheckpointEvent
from services.registry.client import RegistryClient, Watch
from services.registry.server import register
from services.runtime.config import ServiceConfig
from services.runtime.redis_store import RedisHandle
from services.testing import ServiceThread
from tests.conftest import free_port


def make_tree(directory: Path, files: int = 3, size: int = 2048, seed: str = "") -> Path:
    """A small checkpoint-like directory: a few KB of distinct bytes, one nested file."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = directory / ("nested/part.bin" if i == files - 1 else f"file{i}.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{seed}-{i}-".encode() + os.urandom(size))
    (directory / "config.json").write_text('{"tiny": true}')
    return directory


@dataclass
class RegistryEnv:
    """What a registry needs to come back after a restart: same Redis, keys, files, port."""

    redis_url: str
    key_prefix: str
    artifact_root: str
    port: int
    import_roots: list[str] = field(default_factory=list)
    chunk_bytes: int = 1 << 20

    def config(self) -> ServiceConfig:
        return ServiceConfig(
            port=self.port,
            metrics_port=None,
            redis_url=self.redis_url,
            grace_seconds=0.5,
            settings={
                "artifact_root": self.artifact_root,
                "key_prefix": self.key_prefix,
                "watch_poll_ms": 200,
                "import_roots": self.import_roots,
                "chunk_bytes": self.chunk_bytes,
            },
        )

    def start(self) -> ServiceThread:
        return ServiceThread("registry", register, self.config()).start()


@pytest.fixture
def registry_env(redis_handle: RedisHandle, tmp_path: Path) -> Iterator[RegistryEnv]:
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    yield RegistryEnv(redis_handle.url, prefix, str(tmp_path / "artifacts"), free_port())
    for key in redis_handle.client.scan_iter(f"{prefix}*"):
        redis_handle.client.delete(key)


@pytest.fixture
def registry(registry_env: RegistryEnv) -> Iterator[ServiceThread]:
    service = registry_env.start()
    yield service
    service.stop()


@pytest.fixture
def client(registry: ServiceThread) -> Iterator[RegistryClient]:
    with RegistryClient(registry.client_config()) as registry_client:
        yield registry_client


def take(
    watch: Watch, count: int, kind: str = "registered", timeout: float = 60
) -> list[CheckpointEvent]:
    """The first `count` events of `kind`, or fewer if they do not come within timeout."""
    events: list[CheckpointEvent] = []

    def collect() -> None:
        for event in watch:
            if event.kind == kind:
                events.append(event)
                if len(events) == count:
                    return

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        watch.close()
        reader.join(10)
    return list(events)


def artifact_dirs(root: Path) -> list[Path]:
    """Every directory directly under <root>/<name>/, temporary ones included."""
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []
