"""Generator: batched generation on the HF engine (CPU/GPU) or vLLM (GPU pods)."""

from __future__ import annotations

from collections.abc import Sequence

from services.protos.astro.v1 import generator_pb2
from services.runtime.placeholder import placeholder_handler
from services.runtime.server import ServiceRuntime


def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    service = generator_pb2.DESCRIPTOR.services_by_name["Generator"]
    runtime.server.add_generic_rpc_handlers([placeholder_handler(service)])
    return [service.full_name]
