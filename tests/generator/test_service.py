"""The generator service over real gRPC on loopback: remote = local, batching, errors,
back-pressure, deadlines, background loading and hot swap under load."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from astro_core.engines import EngineConfig, GenerationRequest, InvalidRequest, load_engine
from astro_core.engines.base import Engine
from astro_core.protocols import Generator
from services.generator.client import GenerationCancelled, GeneratorClient
from services.generator.server import SERVICE, GeneratorService, add_generator
from services.protos.astro.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from tests.generator.conftest import Registry

PROMPTS = ["Let's think step by step.", "Solve for x: 2x + 3 = 7", "The area", "1 2 3"]
LONG_PROMPT = "Count:"  # greedy decoding from it runs to max_tokens on the tiny model


@contextmanager
def generator_service(
    settings: dict[str, Any], store: Any = None, **config: Any
) -> Iterator[tuple[ServiceThread, GeneratorService]]:
    holder: list[GeneratorService] = []

    def register(runtime: Any) -> list[str]:
        holder.append(add_generator(runtime, store))
        return [SERVICE]

    service_config = ServiceConfig(
        port=0, metrics_port=None, grace_seconds=1, settings=settings, **config
    )
    with ServiceThread("generator", register, service_config) as svc:
        yield svc, holder[0]


def stub_of(svc: ServiceThread) -> generator_pb2_grpc.GeneratorStub:
    return generator_pb2_grpc.GeneratorStub(sync_channel(svc.client_config(retry_attempts=1)))


def params(**fields: Any) -> generator_pb2.SamplingParams:
    values: dict[str, Any] = {"n": 1, "max_tokens": 8, "temperature": 1.0, "top_p": 1.0}
    return generator_pb2.SamplingParams(**{**values, **fields})


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir: Path) -> Engine:
    return load_engine(EngineConfig(model_path=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> Iterator[tuple[ServiceThread, GeneratorService]]:
    settings = {"model": {"path": str(tiny_model_dir)}, "max_wait_ms": 50}
    with generator_service(settings) as running:
        yield running


def test_remote_generator_matches_local_engine(served: Any, local_engine: Engine) -> None:
    svc, _ = served
    with GeneratorClient(svc.client_config()) as client:
        assert isinstance(client, Generator)
        info = client.model_info()
        assert (info.version, info.engine, info.device) == (local_engine.model_version, "hf", "cpu")
        assert info.max_model_len == local_engine.max_model_len
        assert client.chat_template() == local_engine.chat_template()
        kwargs: dict[str, Any] = {"n": 2, "max_tokens": 8, "seed": 3, "logprobs": True}
        assert client.generate(PROMPTS, **kwargs) == local_engine.generate(PROMPTS, **kwargs)
        remote = client.generate(PROMPTS[:1], max_tokens=6, temperature=0)
        [local] = local_engine.generate_batch(
            [GenerationRequest(tuple(PROMPTS[:1]), local_params(max_tokens=6, temperature=0))]
        )
        assert [c.token_ids for c in remote] == [c.token_ids for c in local]
        assert all(c.token_ids for c in remote)
        assert client.generate([], max_tokens=4) == []
        budgets = [2, 5, 9, 3][: len(PROMPTS)]
        per_prompt = client.generate(PROMPTS[: len(budgets)], max_tokens=budgets, temperature=0)
        assert per_prompt == local_engine.generate(
            PROMPTS[: len(budgets)], max_tokens=budgets, temperature=0
        )
        assert all(c.num_tokens <= b for c, b in zip(per_prompt, budgets, strict=True))
        with pytest.raises(InvalidRequest, match="one per prompt"):
            client.generate(PROMPTS[:2], max_tokens=[3])


def local_params(**fields: Any) -> Any:
    from astro_core.engines import SamplingParams

    return SamplingParams(**fields)


def test_concurrent_calls_are_coalesced_into_batches(served: Any, local_engine: Engine) -> None:
    svc, service = served
    before = service.batcher.stats.largest_batch_calls
    barrier = threading.Barrier(12)

    # Greedy, one distinct prompt per caller: each caller must get its own prompt's tokens.
    # (Seeded sampling is batch-independent only up to float reductions: a draw within ~1e-6
    # of a token boundary can flip with the batch's shape, which the caller's timing sets.)
    prompts = [f"{PROMPTS[i % 4]} {i}" for i in range(12)]

    def call(i: int) -> list[Any]:
        with GeneratorClient(svc.client_config()) as client:
            barrier.wait()
            return client.generate([prompts[i]], n=2, max_tokens=6, temperature=0)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    for i, completions in enumerate(results):
        local = local_engine.generate([prompts[i]], n=2, max_tokens=6, temperature=0)
        assert [c.token_ids for c in completions] == [c.token_ids for c in local]
    assert max(before, service.batcher.stats.largest_batch_calls) >= 2


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"params": params(n=0)}, "n must be >= 1"),
        ({"params": params(temperature=-0.1)}, "temperature must be >= 0"),
        ({"params": params(top_p=1.5)}, "top_p must be in"),
        ({"params": params(max_tokens=0)}, "max_tokens must be >= 1"),
        ({}, "params: is required"),
        (
            {"prompts": ["ok", "step " * 9000], "params": params()},
            "prompt 1 has .* tokens; the model accepts",
        ),
    ],
)
def test_bad_generate_requests_are_invalid_argument(
    served: Any, request_fields: dict[str, Any], message: str
) -> None:
    svc, _ = served
    fields = {"prompts": ["hello"], **request_fields}
    with pytest.raises(grpc.RpcError) as err:
        stub_of(svc).Generate(generator_pb2.GenerateRequest(**fields), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, err.value.details()), err.value.details()


def test_client_raises_invalid_request(served: Any) -> None:
    svc, _ = served
    with (
        GeneratorClient(svc.client_config()) as client,
        pytest.raises(InvalidRequest, match="temperature must be >= 0"),
    ):
        client.generate(["hi"], temperature=-1)


def test_load_model_errors_leave_the_model_serving(served: Any, tmp_path: Path) -> None:
    svc, _ = served
    stub = stub_of(svc)
    version = stub.GetModel(generator_pb2.GetModelRequest()).version
    cases = [
        # outside the model roots (the data dir): refused the same whether it exists or not
        (
            common_pb2.ModelRef(path=str(tmp_path / "nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nope",
        ),
        (common_pb2.ModelRef(path=str(tmp_path)), grpc.StatusCode.INVALID_ARGUMENT, "model_roots"),
        (common_pb2.ModelRef(), grpc.StatusCode.INVALID_ARGUMENT, "give a path or"),
        (
            common_pb2.ModelRef(name="tiny", alias="sft"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no checkpoint registry",
        ),
    ]
    for ref, code, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=30)
        assert err.value.code() == code, err.value.details()
        assert text in err.value.details()
    assert stub.GetModel(generator_pb2.GetModelRequest()).version == version
    reply = stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()))
    assert reply.model_version == version and len(reply.completions) == 1


def test_full_queue_answers_resource_exhausted(tiny_model_dir: Path) -> None:
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "max_queue": 2,
        "max_batch_size": 1,
        "max_wait_ms": 0,
    }
    with generator_service(settings) as (svc, _):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)  # loaded
        barrier = threading.Barrier(10)

        def call(i: int) -> grpc.StatusCode:
            request = generator_pb2.GenerateRequest(
                prompts=[LONG_PROMPT], params=params(max_tokens=200, temperature=0)
            )
            barrier.wait()
            try:
                stub.Generate(request, timeout=120)
            except grpc.RpcError as exc:
                assert "queue is full" in exc.details()
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(call, range(10)))
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) >= 3  # one running + the two queued


def test_expired_calls_are_dropped_and_health_answers_while_decoding(tiny_model_dir: Path) -> None:
    settings = {"model": {"path": str(tiny_model_dir)}, "max_batch_size": 1, "max_wait_ms": 0}
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)
        long = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT], params=params(max_tokens=400, temperature=0)
        )
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(stub.Generate, long, timeout=120)
            deadline = time.monotonic() + 30
            while not service.batcher.busy and time.monotonic() < deadline:
                time.sleep(0.001)
            # The engine decodes on its own thread: health answers meanwhile.
            health = health_pb2_grpc.HealthStub(sync_channel(svc.client_config()))
            reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert service.batcher.busy
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(
                    generator_pb2.GenerateRequest(prompts=["hi"], params=params()), timeout=0.1
                )
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert running.result().completions[0].num_tokens == 400
        stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()), timeout=30)
        assert service.batcher.stats.calls == 2  # the expired call never reached the engine


def test_default_tiny_model_loads_in_the_background(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with generator_service({}, data_dir=str(data)) as (svc, _):
        health = health_pb2_grpc.HealthStub(sync_channel(svc.client_config()))

        def status(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service)).status

        assert status("") == health_pb2.HealthCheckResponse.SERVING  # the process is up
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.append(status(SERVICE))
            if seen[-1] == health_pb2.HealthCheckResponse.SERVING and len(seen) > 1:
                break
            time.sleep(0.02)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
        with GeneratorClient(svc.client_config()) as client:
            info = client.model_info()
            assert info.name == "tiny-llama"
            assert Path(info.path) == (data / "models" / "tiny-llama").resolve()
            assert info.chat_template.template.startswith("{{ bos_token }}")
            assert len(client.generate(["hi"], n=3, max_tokens=4)) == 3


def test_failed_first_load_reports_why_until_load_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = {"model": {"path": str(tmp_path / "missing")}, "model_roots": [str(tiny_model_dir)]}
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        deadline = time.monotonic() + 30
        while not service.load_error and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "missing does not exist" in err.value.details()
        ref = common_pb2.ModelRef(path=str(tiny_model_dir))
        info = stub.LoadModel(generator_pb2.LoadModelRequest(model=ref), timeout=60)
        reply = stub.Generate(generator_pb2.GenerateRequest(prompts=["hi"], params=params()))
        assert reply.model_version == info.version


@pytest.mark.parametrize("swap", ["overlap", "drain"])
def test_hot_swap_under_concurrent_load(
    swap: str,
    registry: Registry,
    tiny_model_dir: Path,
    other_model_dir: Path,
) -> None:
    # What each version answers greedily, computed locally: a response must match the
    # version it names, which proves the name is the model that produced it.
    expected = {}
    for version, path in (("tiny:1", tiny_model_dir), ("tiny:2", other_model_dir)):
        engine = load_engine(EngineConfig(model_path=str(path)))
        expected[version] = [c.text for c in engine.generate(PROMPTS, max_tokens=10, temperature=0)]
    assert expected["tiny:1"] != expected["tiny:2"]

    settings = {"model": {"name": "tiny", "alias": "base"}, "max_wait_ms": 5, "swap": swap}
    with generator_service(settings, registry.client) as (svc, _):
        stop = threading.Event()
        # (started, finished, prompt, version, text) of every call
        results: list[tuple[float, float, int, str, str]] = []
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            with GeneratorClient(svc.client_config()) as client:
                i = w
                while not stop.is_set():
                    k = i % len(PROMPTS)
                    started = time.monotonic()
                    try:
                        [c] = client.generate([PROMPTS[k]], max_tokens=10, temperature=0)
                    except BaseException as exc:  # noqa: BLE001 - every failure is a finding
                        errors.append(exc)
                        return
                    results.append((started, time.monotonic(), k, c.model_version, c.text))
                    i += 1

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + 60
            while len(results) < count and time.monotonic() < deadline and not errors:
                time.sleep(0.01)

        with GeneratorClient(svc.client_config()) as admin:
            assert admin.model_info().version == "tiny:1"
            threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
            for t in threads:
                t.start()
            wait_for(12)
            swapped = admin.load_model(name="tiny", alias="sft")
            after_first = time.monotonic()
            wait_for(len(results) + 12)
            before_second = time.monotonic()
            back = admin.load_model(name="tiny", version=1)
            after_second = time.monotonic()
            wait_for(len(results) + 12)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            with pytest.raises(grpc.RpcError) as err:
                admin.load_model(name="nobody")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "nobody" in err.value.details()
    assert not errors, errors
    assert (swapped.version, back.version) == ("tiny:2", "tiny:1")
    assert registry.client.pulls == 2  # tiny:1 was pulled once, then served from the cache
    for _, _, k, version, text in results:
        assert text == expected[version][k], (version, k)
    assert {"tiny:1", "tiny:2"} <= {v for *_, v, _ in results}
    # Calls made after a swap returned are served by the new model.
    between = [v for s, f, _, v, _ in results if s > after_first and f < before_second]
    assert between and set(between) == {"tiny:2"}
    assert {v for s, _, _, v, _ in results if s > after_second} == {"tiny:1"}


def test_registry_address_setting_loads_registered_checkpoints(
    registry: Registry, other_model_dir: Path, tmp_path: Path
) -> None:
    """The deployed path: the generator dials the registry named in its settings, starts on
    a checkpoint by alias, swaps by version, and reports NOT_FOUND for what is not there."""
    local = load_engine(EngineConfig(model_path=str(other_model_dir)))
    expected = [c.text for c in local.generate(PROMPTS, max_tokens=10, temperature=0)]
    local.close()
    settings = {
        "model": {"name": "tiny", "alias": "sft"},
        "registry_address": registry.address,
        "cache_dir": str(tmp_path / "cache"),
    }
    with generator_service(settings) as (svc, _), GeneratorClient(svc.client_config()) as client:
        info = client.model_info()
        assert (info.name, info.version) == ("tiny", "tiny:2")
        completions = client.generate(PROMPTS, max_tokens=10, temperature=0)
        assert [c.text for c in completions] == expected
        assert {c.model_version for c in completions} == {"tiny:2"}
        assert client.load_model(name="tiny", version=1).version == "tiny:1"
        with pytest.raises(grpc.RpcError) as err:
            client.load_model(name="tiny", version=3)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "tiny:3" in err.value.details()
        assert client.model_info().version == "tiny:1"
    # each version was pulled into the cache once, sha256-verified by the client
    assert pulled_versions(tmp_path / "cache" / "tiny") == ["1", "2"]


def wait_for_version(client: GeneratorClient, version: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = client.model_info().version
        if seen == version:
            break
        time.sleep(0.1)
    return seen


def test_follow_alias_hot_loads_each_new_checkpoint(
    registry: Registry, tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path
) -> None:
    """With follow_alias, a registration that moves the alias (the trainer's new checkpoint)
    or an explicit alias move is served without any LoadModel call."""
    expected = {}
    for version, path in (("tiny:2", other_model_dir), ("tiny:3", tiny_model_dir)):
        local = load_engine(EngineConfig(model_path=str(path)))
        expected[version] = [c.text for c in local.generate(PROMPTS, max_tokens=10, temperature=0)]
        local.close()
    settings = {
        "model": {"name": "tiny", "alias": "best"},
        "follow_alias": "best",
        "registry_address": registry.address,
        "cache_dir": str(tmp_path / "cache"),
    }
    registry.client.set_alias("tiny", 2, "best")
    with generator_service(settings) as (svc, _), GeneratorClient(svc.client_config()) as client:
        assert wait_for_version(client, "tiny:2") == "tiny:2"
        # a new checkpoint under the followed alias
        registry.client.register("tiny", tiny_model_dir, stage="grpo", aliases=["best"])
        assert wait_for_version(client, "tiny:3") == "tiny:3"
        completions = client.generate(PROMPTS, max_tokens=10, temperature=0)
        assert [c.text for c in completions] == expected["tiny:3"]
        # a move of another alias changes nothing; moving the followed one back does
        registry.client.set_alias("tiny", 1, "sft")
        registry.client.set_alias("tiny", 2, "best")
        assert wait_for_version(client, "tiny:2") == "tiny:2"
        completions = client.generate(PROMPTS, max_tokens=10, temperature=0)
        assert [c.text for c in completions] == expected["tiny:2"]
        assert {c.model_version for c in completions} == {"tiny:2"}
    # tiny:1 only ever had the "sft" move: it was never pulled, so never loaded
    assert pulled_versions(tmp_path / "cache" / "tiny") == ["2", "3"]


def pulled_versions(cache: Path) -> list[str]:
    """Versions in a checkpoint cache (folders `<version>-<content digest>`)."""
    return sorted(p.name.split("-")[0] for p in cache.iterdir())


def test_follow_alias_needs_a_registry_and_a_name(tiny_model_dir: Path) -> None:
    from astro_core.config import ConfigError

    with pytest.raises(ConfigError, match="follow_alias needs settings.registry_address"):
        with generator_service({"model": {"name": "tiny"}, "follow_alias": "latest"}):
            pass
    with pytest.raises(ConfigError, match="follow_alias needs model.name"):
        with generator_service({"model": {"path": str(tiny_model_dir)}, "follow_alias": "x"}):
            pass


def test_a_bad_checkpoint_cache_limit_fails_the_start(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a client's LoadModel later, with an INVALID_ARGUMENT blaming its request."""
    from astro_core.config import ConfigError

    monkeypatch.setenv("ASTRO_CHECKPOINT_CACHE_GB", "ten")
    with pytest.raises(ConfigError, match="ASTRO_CHECKPOINT_CACHE_GB='ten'"):
        with generator_service({"model": {"path": str(tiny_model_dir)}}):
            pass


def test_abandoned_calls_stop_decoding_and_free_the_engine(tiny_model_dir: Path) -> None:
    """A call whose client gave up (deadline or cancel) leaves the batch at the next step:
    the next small call does not wait for the abandoned one's 6000 tokens."""
    settings = {"model": {"path": str(tiny_model_dir)}, "max_batch_size": 1, "max_wait_ms": 0}
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)
        long = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT], params=params(max_tokens=6000, temperature=0)
        )
        small = generator_pb2.GenerateRequest(prompts=["hi"], params=params(max_tokens=4))
        stats = service.batcher.stats

        def wait_until_decoding(steps: int) -> None:
            deadline = time.monotonic() + 30
            while stats.steps < steps and time.monotonic() < deadline:
                time.sleep(0.005)
            assert stats.steps >= steps

        # 1. the deadline passes while the long call decodes
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(long, timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(stub.Generate(small, timeout=60).completions) == 1
        # 2. the client cancels the RPC mid-decode
        steps_before = stats.steps
        future = stub.Generate.future(long, timeout=120)
        wait_until_decoding(steps_before + 20)
        future.cancel()
        assert len(stub.Generate(small, timeout=60).completions) == 1
        assert stats.cancelled_calls == 2
        # Each long call stopped soon after it was abandoned: far from its 6000 steps.
        assert stats.steps < 6000
        assert stats.calls == 4


def test_a_client_s_cancel_event_ends_its_call_and_the_server_s_work(
    tiny_model_dir: Path,
) -> None:
    """`GeneratorClient.generate(cancel=event)`: setting the event mid-decode raises
    GenerationCancelled at once, and the server drops the call at its next step (the
    coordinator's worker cuts a cancelled search's round short this way)."""
    settings = {"model": {"path": str(tiny_model_dir)}, "max_batch_size": 1, "max_wait_ms": 0}
    with generator_service(settings) as (svc, service):
        stats = service.batcher.stats
        with GeneratorClient(svc.client_config()) as client:
            client.model_info(timeout=60)
            cancel = threading.Event()
            timer = threading.Timer(1.0, cancel.set)
            timer.start()
            started = time.monotonic()
            with pytest.raises(GenerationCancelled):
                client.generate([LONG_PROMPT], max_tokens=6000, temperature=0, cancel=cancel)
            assert time.monotonic() - started < 1.0 + 5
            deadline = time.monotonic() + 30
            while stats.cancelled_calls < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stats.cancelled_calls == 1 and stats.steps < 6000
            assert len(client.generate(["hi"], max_tokens=4, cancel=threading.Event())) == 1


def test_call_limits_over_grpc(tiny_model_dir: Path) -> None:
    """Each bound from the settings answers with the status and the setting's name; a
    refused call never reaches the engine and leaves co-batched calls untouched."""
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "max_n": 4,
        "max_new_tokens": 500,
        "max_prompts": 3,
        "max_stop_strings": 2,
        "max_stop_chars": 8,
        "max_call_tokens": 2000,
        "max_wait_ms": 0,
    }
    invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    cases = [
        ({"params": params(n=5)}, invalid, "n=5 exceeds the limit max_n=4"),
        ({"params": params(n=3_000_000, max_tokens=1)}, invalid, "max_n=4"),
        ({"params": params(max_tokens=2**32 - 1)}, invalid, "max_new_tokens=500"),
        (
            {"params": params(), "max_tokens_per_prompt": [501]},
            invalid,
            "max_tokens=501 exceeds the limit max_new_tokens=500",
        ),
        ({"prompts": ["a"] * 4, "params": params()}, invalid, "max_prompts=3"),
        ({"params": params(stop=["a", "b", "c"])}, invalid, "max_stop_strings=2"),
        ({"params": params(stop=["x" * 9])}, invalid, "max_stop_chars=8"),
        ({"params": params(n=4, max_tokens=500)}, exhausted, "max_call_tokens=2000"),
        ({"params": params(temperature=float("inf"))}, invalid, "temperature must be >= 0 and"),
        ({"params": params(temperature=float("nan"))}, invalid, "temperature must be >= 0 and"),
        ({"params": params(top_p=float("nan"))}, invalid, r"top_p must be in \(0, 1\]"),
    ]
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)
        beside = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT], params=params(max_tokens=400, temperature=0)
        )
        alone = stub.Generate(beside, timeout=120)
        calls = service.batcher.stats.calls
        running = stub.Generate.future(beside, timeout=120)
        for fields, code, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(generator_pb2.GenerateRequest(**{"prompts": ["hi"], **fields}))
            assert err.value.code() == code, (fields, err.value.details())
            assert re.search(message, err.value.details()), err.value.details()
        assert running.result() == alone  # the call decoding meanwhile is untouched
        assert service.batcher.stats.calls == calls + 1  # no refused call reached the engine
        # At the bounds exactly, calls are served.
        ok = stub.Generate(
            generator_pb2.GenerateRequest(
                prompts=["a", "b", "c"], params=params(n=4, max_tokens=20, stop=["x" * 8, "y"])
            ),
            timeout=60,
        )
        assert len(ok.completions) == 12


def test_default_limits_refuse_the_reported_requests(served: Any) -> None:
    svc, service = served
    stub = stub_of(svc)
    for fields, name in [
        ({"n": 3_000_000, "max_tokens": 1}, "max_n=256"),
        ({"max_tokens": 2**32 - 1}, "max_new_tokens=32768"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(
                generator_pb2.GenerateRequest(prompts=["hi"], params=params(**fields)), timeout=30
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert name in err.value.details()
    assert service.batcher.queued == 0


def test_abandoned_queued_calls_do_not_pile_up(tiny_model_dir: Path) -> None:
    """Callers that give up while the engine is busy leave no request behind them: the
    queue never holds more than max_queue calls, and live calls still get in."""
    settings = {
        "model": {"path": str(tiny_model_dir)},
        "max_batch_size": 1,
        "max_wait_ms": 0,
        "max_queue": 2,
    }
    with generator_service(settings) as (svc, service):
        stub = stub_of(svc)
        stub.GetModel(generator_pb2.GetModelRequest(), timeout=60)
        long = generator_pb2.GenerateRequest(
            prompts=[LONG_PROMPT], params=params(max_tokens=3000, temperature=0)
        )
        running = stub.Generate.future(long, timeout=120)
        deadline = time.monotonic() + 30
        while not service.batcher.busy and time.monotonic() < deadline:
            time.sleep(0.005)
        small = generator_pb2.GenerateRequest(prompts=["hi"], params=params(max_tokens=2))
        for _ in range(8):
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(small, timeout=0.05)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(service.batcher._pending) <= 2  # the abandoned requests are let go
        waiting = stub.Generate.future(small, timeout=120)
        running.cancel()
        assert len(waiting.result().completions) == 1
        assert service.batcher.stats.dropped_calls >= 8
