"""Give a service a Redis connection that lives as long as its runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import redis

from services.runtime.redis_store import EmbeddedRedisError, RedisHandle, connect_redis
from services.runtime.server import ServiceRuntime, ServiceStartError


async def attach_redis(runtime: ServiceRuntime) -> RedisHandle:
    """Connect (config.redis_url > REDIS_URL > embedded) and close it when the service stops.
    A Redis that cannot be reached or started is a ServiceStartError saying why."""
    directory = Path(runtime.config.data_dir) / "redis" if runtime.config.data_dir else None
    try:
        handle = await asyncio.to_thread(connect_redis, runtime.config.redis_url, directory)
    except (redis.RedisError, EmbeddedRedisError, OSError) as exc:
        raise ServiceStartError(f"{runtime.name}: no Redis: {exc}") from None
    runtime.on_shutdown(handle.close)
    return handle


@contextlib.asynccontextmanager
async def store_errors(context: grpc.aio.ServicerContext, store: str) -> AsyncIterator[None]:
    """Redis out of reach is UNAVAILABLE (a client may retry), not an internal error;
    `store` names what is out of reach ("the coordinator's run store")."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{store} is unavailable: {exc}")
