"""The committed stubs are exactly what `make protos` produces from the .proto sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generator = _load_generator()
    generator.generate(tmp_path)
    committed = REPO / "services" / "protos"
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*_pb2*.py*")}
    assert fresh, "protoc produced nothing"
    stale = [
        str(rel)
        for rel, text in fresh.items()
        if not (committed / rel).exists() or (committed / rel).read_text() != text
    ]
    extra = [
        str(p.relative_to(committed))
        for p in committed.rglob("*_pb2*.py*")
        if p.relative_to(committed) not in fresh
    ]
    assert not stale, f"stubs out of date, run `make protos`: {stale}"
    assert not extra, f"stubs without a .proto source: {extra}"


def test_every_service_of_the_design_has_a_contract() -> None:
    from services.protos.astro.v1 import (
        generator_pb2,
        registry_pb2,
        run_pb2,
        search_pb2,
        trainer_pb2,
        verifier_pb2,
    )

    services = {
        name
        for module in (generator_pb2, registry_pb2, run_pb2, search_pb2, verifier_pb2)
        for name in module.DESCRIPTOR.services_by_name
    }
    assert services == {"Generator", "CheckpointRegistry", "Runs", "SearchCoordinator", "Verifier"}
    assert "TrainJobSpec" in trainer_pb2.DESCRIPTOR.message_types_by_name


def test_every_message_and_service_is_documented() -> None:
    """The .proto files are the contract's documentation: each message and rpc has a comment."""
    undocumented = []
    for proto in sorted((REPO / "protos" / "astro" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.startswith(("message ", "service ")) and not lines[index - 1].startswith("//"):
                undocumented.append(f"{proto.name}: {line}")
    assert not undocumented
