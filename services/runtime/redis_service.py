"""Give a service a Redis connection that lives as long as its runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.runtime.redis_store import RedisHandle, connect_redis
from services.runtime.server import ServiceRuntime


async def attach_redis(runtime: ServiceRuntime) -> RedisHandle:
    """Connect (config.redis_url > REDIS_URL > embedded) and close it when the service stops."""
    directory = Path(runtime.config.data_dir) / "redis" if runtime.config.data_dir else None
    handle = await asyncio.to_thread(connect_redis, runtime.config.redis_url, directory)
    runtime.on_shutdown(handle.close)
    return handle
