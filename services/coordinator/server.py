"""SearchCoordinator and Runs: search state and run records in Redis.

Keys: astro:search:* and astro:run:*.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.protos.astro.v1 import run_pb2, search_pb2
from services.runtime.placeholder import placeholder_handler
from services.runtime.redis_service import attach_redis
from services.runtime.server import ServiceRuntime


async def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    await attach_redis(runtime)
    services = [
        search_pb2.DESCRIPTOR.services_by_name["SearchCoordinator"],
        run_pb2.DESCRIPTOR.services_by_name["Runs"],
    ]
    runtime.server.add_generic_rpc_handlers([placeholder_handler(s) for s in services])
    return [s.full_name for s in services]
