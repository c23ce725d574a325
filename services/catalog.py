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
    # Services this one calls; it gets their addresses as settings `<name>_address`.
    depends_on: tuple[str, ...] = ()


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in [
        ServiceSpec(
            "coordinator",
            "services.coordinator.server",
            50051,
            9451,
            needs_redis=True,
            depends_on=("generator", "verifier", "registry"),
        ),
        ServiceSpec(
            "generator",
            "services.generator.server",
            50052,
            9452,
            needs_redis=False,
            depends_on=("registry",),
        ),
        ServiceSpec("verifier", "services.verifier.server", 50053, 9453, needs_redis=False),
        ServiceSpec("registry", "services.registry.server", 50054, 9454, needs_redis=True),
    ]
}


def start_order(names: list[str]) -> list[list[str]]:
    """Group services into waves so each starts after the services it depends on."""
    waves: list[list[str]] = []
    placed: set[str] = set()
    remaining = list(names)
    while remaining:
        wave = [
            n
            for n in remaining
            if all(d in placed or d not in names for d in SERVICES[n].depends_on)
        ]
        if not wave:
            raise ValueError(f"circular service dependencies among {remaining}")
        waves.append(wave)
        placed.update(wave)
        remaining = [n for n in remaining if n not in placed]
    return waves


def load_register(name: str) -> Register:
    """The `register(runtime)` function of a service module."""
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    module = importlib.import_module(SERVICES[name].module)
    register: Register = module.register
    return register
