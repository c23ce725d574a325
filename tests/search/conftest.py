"""A Redis URL per test for the coordinator: the embedded server, and the real one at
REDIS_URL / 127.0.0.1:6379 on a random spare database (the task stream is one key per
database, so concurrent test sessions on a shared server must not share it)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import EXTERNAL_REDIS_URL, external_redis_available


@pytest.fixture(params=["embedded", "redis_url"])
def search_redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    from services.runtime.redis_store import connect_redis

    if request.param == "embedded":
        handle = connect_redis(url=None, directory=tmp_path / "redis")
        try:
            yield handle.url
        finally:
            handle.close()
        return
    if not external_redis_available():
        pytest.skip(f"no Redis server at {EXTERNAL_REDIS_URL}")
    base = (
        EXTERNAL_REDIS_URL.rsplit("/", 1)[0]
        if EXTERNAL_REDIS_URL.count("/") > 2
        else (EXTERNAL_REDIS_URL)
    )
    url = f"{base}/{random.randint(1, 15)}"
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield url
    finally:
        # our jobs and trees; the task stream stays (a concurrent session may be using it)
        keys = [
            k for k in client.scan_iter("astro:search:*", count=1000) if not k.endswith("tasks")
        ]
        if keys:
            client.delete(*keys)
        client.close()
