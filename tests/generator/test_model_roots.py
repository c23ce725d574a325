"""LoadModel by path over real gRPC on loopback: only model directories under the generator's
model roots (setting model_roots; default its data directory and cache) are loaded, compared
after resolving symlinks and `..`; a path outside and a missing one get the same refusal, and
nothing refused reaches the engine. The config's own model and registered checkpoints load
whatever the roots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

import services.generator.server as generator_server
from astro_core.engines import EngineConfig
from services.generator.server import GeneratorSettings
from services.protos.astro.v1 import common_pb2, generator_pb2
from tests.generator.conftest import Registry
from tests.generator.test_service import generator_service, params, stub_of


class CountedLoads:
    """Wraps the server's load_engine, recording the directory of every load."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        self._load = generator_server.load_engine
        monkeypatch.setattr(generator_server, "load_engine", self)

    def __call__(self, config: EngineConfig) -> Any:
        self.paths.append(config.model_path)
        return self._load(config)


def load(stub: Any, path: str = "", **ref: Any) -> Any:
    request = generator_pb2.LoadModelRequest(model=common_pb2.ModelRef(path=path, **ref))
    return stub.LoadModel(request, timeout=60)


def refusal(stub: Any, path: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        load(stub, path)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.value.details())
    details: str = err.value.details()
    return details


@pytest.fixture()
def layout(tmp_path: Path, tiny_model_dir: Path) -> Iterator[dict[str, Path]]:
    """A data dir holding a model, and around it what a client must not reach."""
    data = tmp_path / "data"
    inside = data / "models" / "mine"
    shutil.copytree(tiny_model_dir, inside)
    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, outside)
    (data / "models" / "link-out").symlink_to(outside)  # a link inside, leading out
    leaky = data / "models" / "leaky"  # a model dir inside whose config is a link out
    shutil.copytree(tiny_model_dir, leaky)
    (leaky / "config.json").unlink()
    (leaky / "config.json").symlink_to(outside / "config.json")
    yield {"data": data, "inside": inside, "outside": outside, "leaky": leaky}


def test_load_model_loads_paths_under_the_data_dir_only(
    layout: dict[str, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before model_roots, LoadModel loaded any directory the process could read: /etc was
    probed (NOT_FOUND vs INVALID_ARGUMENT told what exists) and any model loaded."""
    data, inside, outside = layout["data"], layout["inside"], layout["outside"]
    loads = CountedLoads(monkeypatch)
    settings = {"model": {"path": str(tiny_model_dir)}, "max_wait_ms": 0}
    with generator_service(settings, data_dir=str(data)) as (svc, _):
        stub = stub_of(svc)
        first = stub.GetModel(generator_pb2.GetModelRequest(), timeout=60).version
        probes = [
            "/etc",
            "/root",
            "/proc/self",
            str(outside),  # a real model, outside
            str(data / ".." / "elsewhere" / "model"),  # `..` out of the root
            str(data / "models" / "link-out"),  # a symlink in the root, to outside
            str(outside.parent / "missing"),  # missing, outside
            str(data / "models" / "missing"),  # missing, inside
            "../../../../../../../../etc",  # relative: from the first root, then out
            "~",
            "a\x00b",
            "x" * 100_000,
        ]
        for path in probes:
            details = refusal(stub, path)
            assert "model roots (setting model_roots)" in details, details
        # the same answer, whether the path exists or not
        shown = [refusal(stub, p).replace(repr(p), "PATH") for p in (str(outside), "/nope/x")]
        assert shown[0] == shown[1]
        details = refusal(stub, str(layout["leaky"]))
        assert "config.json" in details and "leads outside" in details, details
        assert loads.paths == [str(tiny_model_dir.resolve())]  # none reached the engine
        reply = stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()))
        assert reply.model_version == first

        info = load(stub, str(inside))
        assert info.path == str(inside.resolve()) and info.version != first
        assert load(stub, "models/mine").path == info.path  # relative: from the first root
        # the model the config names is the operator's choice: loadable though outside
        assert load(stub, str(tiny_model_dir)).version == first
        reply = stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()))
        assert reply.model_version == first


def test_model_roots_setting_replaces_the_default(
    layout: dict[str, Path], tiny_model_dir: Path
) -> None:
    data, inside, outside = layout["data"], layout["inside"], layout["outside"]
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "model_roots": [str(outside.parent)],
        "max_wait_ms": 0,
    }
    with generator_service(settings, data_dir=str(data)) as (svc, _):
        stub = stub_of(svc)
        assert load(stub, str(outside)).path == str(outside.resolve())
        assert "model_roots" in refusal(stub, str(inside))  # the data dir is not a root now
        assert "model_roots" in refusal(stub, "model-that-is-not-there")

    # a root reached through a symlink is compared as its real path
    alias = layout["data"].parent / "alias"
    alias.symlink_to(outside.parent)
    settings["model_roots"] = [str(alias)]
    with generator_service(settings, data_dir=str(data)) as (svc, _):
        stub = stub_of(svc)
        assert load(stub, str(outside)).path == str(outside.resolve())
        assert load(stub, str(alias / "model")).path == str(outside.resolve())


def test_no_roots_still_serves_registered_checkpoints(
    registry: Registry, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """model_roots: [] refuses every path; names are pulled into the cache and load."""
    settings = {
        "model": {"name": "tiny", "alias": "base"},
        "model_roots": [],
        "cache_dir": str(tmp_path / "cache"),
        "max_wait_ms": 0,
    }
    with generator_service(settings, registry.client) as (svc, _):
        stub = stub_of(svc)
        assert stub.GetModel(generator_pb2.GetModelRequest(), timeout=60).version == "tiny:1"
        pulled = load(stub, name="tiny", alias="sft")
        assert pulled.version == "tiny:2" and Path(pulled.path).is_relative_to(tmp_path / "cache")
        assert "model_roots" in refusal(stub, pulled.path)  # not by its path
        assert "model_roots" in refusal(stub, str(tiny_model_dir))
        assert load(stub, name="tiny", version=1).version == "tiny:1"


def test_an_empty_root_is_refused() -> None:
    with pytest.raises(ValidationError, match="empty folder name"):
        GeneratorSettings.model_validate({"model_roots": ["/models", " "]})


def test_a_root_admits_what_lies_under_it_only(tmp_path: Path) -> None:
    from services.generator.roots import ModelRoots

    roots = ModelRoots.of([str(tmp_path / "a")], [])
    os.makedirs(tmp_path / "a" / "m")
    assert roots.admits(str(tmp_path / "a" / "m"))
    assert not roots.admits(str(tmp_path / "ab"))  # a sibling sharing the prefix is outside


def test_the_configs_own_model_is_allowed_as_the_config_names_it(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative model.path (resolved from the working directory, as the first load does)
    stays loadable by the same text with no roots; other relative paths are not."""
    from services.generator.roots import ModelPathRefused, ModelRoots

    shutil.copytree(tiny_model_dir, tmp_path / "rel" / "model")
    monkeypatch.chdir(tmp_path)
    roots = ModelRoots.of([], ["rel/model"])
    assert roots.resolve("rel/model") == str((tmp_path / "rel" / "model").resolve())
    assert roots.resolve(str(tmp_path / "rel" / ".." / "rel" / "model")).endswith("model")
    for other in ("rel", "rel/model/..", str(tiny_model_dir)):
        with pytest.raises(ModelPathRefused, match="model_roots"):
            roots.resolve(other)
