"""The services ASTRO runs, their default ports and where their code lives."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from services.runtime.server import Register


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port: int
    metrics_port: int
    needs_redis: bool


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in [
        ServiceSpec("coordinator", "services.coordinator.server", 50051, 9451, needs_redis=True),
        ServiceSpec("generator", "services.generator.server", 50052, 9452, needs_redis=False),
        ServiceSpec("verifier", "services.verifier.server", 50053, 9453, needs_redis=False),
        ServiceSpec("registry", "services.registry.server", 50054, 9454, needs_redis=True),
    ]
}


def load_register(name: str) -> Register:
    """The `register(runtime)` function of a service module."""
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    module = importlib.import_module(SERVICES[name].module)
    register: Register = module.register
    return register
