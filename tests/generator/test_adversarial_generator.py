"""The generator over real gRPC on loopback, probed as an adversary would: edge-case sampling
values, malformed and corrupt models, LoadModel callers that give up mid-swap, and a drain
swap whose rollback fails. After each, the server keeps serving."""

from __future__ import annotations

import math
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import services.generator.server as generator_server
from astro_core.engines import EngineConfig
from services.generator.server import SERVICE, GeneratorService
from services.protos.astro.v1 import common_pb2, generator_pb2
from services.runtime.client import sync_channel
from services.testing import ServiceThread
from tests.generator.test_service import LONG_PROMPT, generator_service, params, stub_of


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `served` may LoadModel from by path (its setting model_roots)."""
    return tmp_path_factory.mktemp("model-root")


@pytest.fixture(scope="module")
def served(
    tiny_model_dir: Path, model_root: Path
) -> Iterator[tuple[ServiceThread, GeneratorService]]:
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "model_roots": [str(model_root)],
        "max_wait_ms": 0,
    }
    with generator_service(settings) as svc:
        svc[0].run(svc[1].batcher.wait_for_engine(60))
        yield svc


def generate(svc: ServiceThread, prompts: list[str], **fields: Any) -> Any:
    request = generator_pb2.GenerateRequest(prompts=prompts, params=params(**fields))
    return stub_of(svc).Generate(request, timeout=60)


def health_of(svc: ServiceThread) -> int:
    stub = health_pb2_grpc.HealthStub(sync_channel(svc.client_config()))
    return stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10).status


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 1e-300},
        {"temperature": 5e-324},  # the smallest positive double
        {"temperature": 1e-40},  # a float32 subnormal
        {"temperature": 1.0, "top_p": 5e-324},
        {"temperature": 1.0, "top_p": 1e-50},
    ],
)
def test_vanishing_temperature_or_top_p_picks_the_most_likely_token(
    served: Any, fields: dict[str, Any]
) -> None:
    """Valid values (temperature >= 0, top_p in (0, 1]) at their limits mean greedy; they
    used to underflow in the engine's float32 and pick the last / least likely token."""
    svc, _ = served
    prompts = ["hi", "Let's think step by step."]
    greedy = generate(svc, prompts, max_tokens=8, temperature=0)
    for seed in (0, 1):
        reply = generate(svc, prompts, max_tokens=8, seed=seed, logprobs=True, **fields)
        assert [c.token_ids for c in reply.completions] == [c.token_ids for c in greedy.completions]
        assert all(math.isfinite(c.cumulative_logprob) for c in reply.completions)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"prompts": [""]}, "prompt 0 is empty"),
        ({"prompts": ["hi", ""]}, "prompt 1 is empty"),
        ({"params": params(stop=[""])}, "stop strings must not be empty"),
        ({"params": params(top_p=0)}, "top_p must be in"),
        ({"params": params(top_p=-1e-300)}, "top_p must be in"),
        ({"params": params(temperature=-5e-324)}, "temperature must be >= 0"),
        ({"params": params(), "max_tokens_per_prompt": [2, 3]}, "2 budgets for 1 prompts"),
        ({"prompts": [], "params": params(), "max_tokens_per_prompt": [2]}, "1 budgets for 0"),
        ({"params": generator_pb2.SamplingParams()}, "n must be >= 1"),
    ],
)
def test_bad_fields_are_invalid_argument_naming_the_field(
    served: Any, request_fields: dict[str, Any], message: str
) -> None:
    svc, service = served
    calls = service.batcher.stats.calls
    fields = {"prompts": ["hi"], "params": params(), **request_fields}
    with pytest.raises(grpc.RpcError) as err:
        stub_of(svc).Generate(generator_pb2.GenerateRequest(**fields), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, err.value.details()), err.value.details()
    assert service.batcher.stats.calls == calls  # refused before the engine
    assert len(generate(svc, ["hi"], max_tokens=2).completions) == 1


def test_odd_but_valid_inputs_are_served(served: Any) -> None:
    svc, _ = served
    for seed in (2**63 - 1, -(2**63), -1):
        again = [generate(svc, ["hi"], n=2, max_tokens=6, seed=seed) for _ in range(2)]
        assert again[0].completions == again[1].completions  # seeded: reproducible
    reply = generate(svc, ["a\x00b", "\x00", "\ufffd\U0010ffff"], max_tokens=4, stop=["\x00"])
    assert len(reply.completions) == 3


def truncated_copy(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    for weights in dest.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:1000])
    return dest


def test_corrupt_weights_are_invalid_argument(
    served: Any, tiny_model_dir: Path, model_root: Path
) -> None:
    """A client's corrupt model directory is its error, like a missing one: not INTERNAL."""
    svc, _ = served
    stub = stub_of(svc)
    version = stub.GetModel(generator_pb2.GetModelRequest(), timeout=30).version
    corrupt = truncated_copy(tiny_model_dir, model_root / "corrupt")
    ref = common_pb2.ModelRef(path=str(corrupt))
    with pytest.raises(grpc.RpcError) as err:
        stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert f"cannot load {corrupt}" in err.value.details()
    assert generate(svc, ["hi"]).model_version == version


class GatedLoads:
    """Wraps the server's load_engine: loads of `gated` wait until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gated: Path) -> None:
        self.gated = str(gated)
        self.entered = threading.Event()
        self.release = threading.Event()
        self._load = generator_server.load_engine
        monkeypatch.setattr(generator_server, "load_engine", self)

    def __call__(self, config: EngineConfig) -> Any:
        if config.model_path == self.gated:
            self.entered.set()
            assert self.release.wait(60)
        return self._load(config)


@pytest.mark.parametrize("swap", ["drain", "overlap"])
@pytest.mark.parametrize("gives_up", ["cancel", "deadline"])
def test_load_model_caller_giving_up_mid_swap_leaves_a_model_served(
    swap: str,
    gives_up: str,
    tiny_model_dir: Path,
    other_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The swap finishes without its caller. A drain swap (the vLLM default) cancelled
    between freeing the old model and serving the new one used to leave no model at all:
    every later Generate and GetModel waited for one until its deadline."""
    gate = GatedLoads(monkeypatch, other_model_dir.resolve())
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "model_roots": [str(other_model_dir)],
        "swap": swap,
        "max_wait_ms": 0,
    }
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        old = stub.GetModel(generator_pb2.GetModelRequest(), timeout=60).version
        ref = common_pb2.ModelRef(path=str(other_model_dir))
        request = generator_pb2.LoadModelRequest(model=ref)
        if gives_up == "cancel":
            future = stub.LoadModel.future(request, timeout=60)
            assert gate.entered.wait(30)
            future.cancel()
        else:
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadModel(request, timeout=0.5)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert gate.entered.is_set()
        time.sleep(0.05)  # the server sees the cancellation before the load can end
        gate.release.set()
        get = generator_pb2.GetModelRequest()
        deadline = time.monotonic() + 30  # an overlap swap serves the old model meanwhile
        while stub.GetModel(get, timeout=30).version == old and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = stub.Generate(
            generator_pb2.GenerateRequest(prompts=["hi"], params=params()), timeout=30
        )
        info = stub.GetModel(get, timeout=30)
        assert info.version != old and info.path == str(other_model_dir.resolve())
        assert reply.model_version == info.version
        assert health_of(svc) == health_pb2.HealthCheckResponse.SERVING
        assert not service.load_error


def test_drain_swap_whose_rollback_fails_refuses_calls_and_reports_not_serving(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """When the new model fails and the freed one cannot be reloaded (its directory went
    away), calls get FAILED_PRECONDITION with both reasons at once, not a wait until their
    deadline, and health is NOT_SERVING until a LoadModel succeeds."""
    first = tmp_path / "first"
    shutil.copytree(tiny_model_dir, first)
    corrupt = truncated_copy(tiny_model_dir, tmp_path / "corrupt")
    settings = {
        "model": {"path": str(first)},
        "model_roots": [str(tmp_path), str(tiny_model_dir)],
        "swap": "drain",
        "max_wait_ms": 0,
    }
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)
        shutil.rmtree(first)
        ref = common_pb2.ModelRef(path=str(corrupt))
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the corrupt model's error
        assert str(corrupt) in err.value.details()
        hi = generator_pb2.GenerateRequest(prompts=["hi"], params=params())
        get = generator_pb2.GetModelRequest()
        started = time.monotonic()
        for call, request in ((stub.Generate, hi), (stub.GetModel, get)):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=20)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
            assert "no model is loaded" in err.value.details()
            assert "reloading the previous model" in err.value.details()
        assert time.monotonic() - started < 10
        assert health_of(svc) == health_pb2.HealthCheckResponse.NOT_SERVING
        ref = common_pb2.ModelRef(path=str(tiny_model_dir))
        info = stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=60)
        assert stub.Generate(hi, timeout=30).model_version == info.version
        assert health_of(svc) == health_pb2.HealthCheckResponse.SERVING
        assert not service.load_error


def test_load_model_after_a_failed_first_load_reports_serving(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Health said NOT_SERVING forever after a failed first load, even once LoadModel had
    loaded a model and calls were served: a readiness probe never let traffic in."""
    settings = {"model": {"path": str(tmp_path / "missing")}, "model_roots": [str(tiny_model_dir)]}
    with generator_service(settings) as (svc, service):
        deadline = time.monotonic() + 30
        while not service.load_error and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.load_error
        assert health_of(svc) == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = stub_of(svc)
        ref = common_pb2.ModelRef(path=str(tiny_model_dir))
        stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=60)
        assert health_of(svc) == health_pb2.HealthCheckResponse.SERVING


def test_a_response_too_large_to_send_names_its_size_and_the_setting(
    tiny_model_dir: Path,
) -> None:
    """A response over the message limit failed in gRPC's words ("Sent message larger than
    max (19482 vs. 16384)"), naming neither the setting nor what to do; now the call is
    RESOURCE_EXHAUSTED naming its size, max_message_bytes and the way out, and calls that fit
    are served. (Not refused up front: a sound bound there would refuse calls that fit.)"""
    settings = {"model": {"path": str(tiny_model_dir)}, "max_wait_ms": 0}
    with generator_service(settings, max_message_bytes=16384) as (svc, _):
        stub = stub_of(svc)
        # greedy from LONG_PROMPT runs to max_tokens: ~20 KB of text, ids and logprobs
        big = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT],
            params=params(n=8, max_tokens=200, temperature=0, logprobs=True),
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(big, timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        details = err.value.details()
        assert "max_message_bytes=16384" in details, details
        assert "8 completions" in details and "split the call" in details
        size = int(details.split(" is ")[1].split(" bytes")[0])
        assert size > 16384
        fits = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT, "hi"],
            params=params(n=2, max_tokens=40, temperature=0, logprobs=True),
        )
        reply = stub.Generate(fits, timeout=60)
        assert len(reply.completions) == 4 and reply.ByteSize() <= 16384
