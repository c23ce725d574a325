"""Verifier: answer extraction and equivalence in a pool of worker processes."""

from __future__ import annotations

from collections.abc import Sequence

from services.protos.astro.v1 import verifier_pb2
from services.runtime.placeholder import placeholder_handler
from services.runtime.server import ServiceRuntime


def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    service = verifier_pb2.DESCRIPTOR.services_by_name["Verifier"]
    runtime.server.add_generic_rpc_handlers([placeholder_handler(service)])
    return [service.full_name]
