"""CheckpointRegistry: metadata in Redis (astro:reg:*), files in a directory or fsspec URL."""

from __future__ import annotations

from collections.abc import Sequence

from services.protos.astro.v1 import registry_pb2
from services.runtime.placeholder import placeholder_handler
from services.runtime.redis_service import attach_redis
from services.runtime.server import ServiceRuntime


async def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    await attach_redis(runtime)
    service = registry_pb2.DESCRIPTOR.services_by_name["CheckpointRegistry"]
    runtime.server.add_generic_rpc_handlers([placeholder_handler(service)])
    return [service.full_name]
