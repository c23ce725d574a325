"""Policy sync in process (colocate) and the checks every rollout passes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from astro_core.engines.config import EngineConfig
from astro_core.engines.hf import HFEngine
from astro_core.models.tiny import TinyModelSpec, build_tiny_model, load_model
from astro_core.problems import Problem
from astro_core.protocols import Completion, RewardMapping, VerifyItem, VerifyResult
from astro_core.training.policy_sync import ColocateSync, SyncTimeout
from astro_core.training.rollouts import (
    PolicyLagError,
    RLPrompt,
    RolloutError,
    SamplingSettings,
    ServedModelMismatch,
    collect_rollouts,
)
from tests.training.scripted import ScriptedGenerator


class Weights:
    """PolicyWeights of a plain torch model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def named_tensors(self) -> Any:
        return list(self.model.state_dict().items())

    def save_pretrained(self, directory: Path) -> None:
        self.model.save_pretrained(directory)


@pytest.fixture
def engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(EngineConfig(model_path=str(tiny_model_dir), device="cpu"))


def test_colocate_push_makes_the_engine_generate_with_the_new_weights(
    engine: HFEngine, tmp_path: Path
) -> None:
    other_dir = build_tiny_model(tmp_path / "other", TinyModelSpec(seed=5))
    other, _ = load_model(other_dir)
    reference = HFEngine(EngineConfig(model_path=str(other_dir), device="cpu"))
    sync = ColocateSync(engine, timeout_seconds=30)
    start = engine.model_version
    sync.check_served()
    prompts = ["Let's think step by step.", "Therefore"]
    before = [c.text for c in engine.generate(prompts, max_tokens=8, temperature=0)]
    served = sync.push(Weights(other), 3)
    got = engine.generate(prompts, max_tokens=8, temperature=0)
    want = [c.text for c in reference.generate(prompts, max_tokens=8, temperature=0)]
    assert [c.text for c in got] == want != before
    assert {c.model_version for c in got} == {served} and served != start
    assert (sync.version_of(start), sync.version_of(served)) == (0, 3)
    assert sync.served_version == 3
    with pytest.raises(ServedModelMismatch, match="not the policy being trained"):
        sync.version_of("somebody-else#123")


class SlowTensor(torch.Tensor):
    """A weight whose copy never finishes in time (a wedged device)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.copy_:
            time.sleep(3)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_colocate_push_that_hangs_raises_sync_timeout(engine: HFEngine) -> None:
    state = dict(engine.model.state_dict())
    slow = [(k, v.clone().as_subclass(SlowTensor)) for k, v in state.items()]

    class SlowWeights(Weights):
        def named_tensors(self) -> Any:
            return slow

    sync = ColocateSync(engine, timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(SyncTimeout, match="took over 0.5 s"):
        sync.push(SlowWeights(engine.model), 1)
    assert time.monotonic() - started < 3
    assert sync.served_version == 0


def test_colocate_push_of_another_architecture_is_refused(engine: HFEngine, tmp_path) -> None:
    bigger = build_tiny_model(tmp_path / "big", TinyModelSpec(hidden_size=64, seed=1))
    other, _ = load_model(bigger)
    with pytest.raises(ServedModelMismatch, match="in the policy but"):
        ColocateSync(engine).push(Weights(other), 1)
    missing = {k: v for k, v in engine.model.state_dict().items() if "lm_head" not in k}
    with pytest.raises(ServedModelMismatch, match="no weight 'lm_head.weight'"):

        class Partial(Weights):
            def named_tensors(self) -> Any:
                return list(missing.items())

        ColocateSync(engine).push(Partial(engine.model), 1)


class AllCorrect:
    def verify_batch(self, items: list[VerifyItem], rewards: RewardMapping) -> list[VerifyResult]:
        return [VerifyResult(True, rewards.correct, "x", "equal") for _ in items]


PROMPTS = [RLPrompt(Problem("p", "toy", "3"), "prompt text", (1, 2, 3))]


def collect(generator: Any, **kwargs: Any) -> Any:
    options = dict(
        version_of={"v0": 0, "v1": 1, "v2": 2}.__getitem__,
        policy_version=2,
        max_policy_lag=1,
        vocab_size=100,
    )
    options.update(kwargs)
    return collect_rollouts(
        generator, AllCorrect(), PROMPTS, SamplingSettings(2, 8), RewardMapping(), **options
    )


def test_rollouts_carry_the_generators_token_ids_and_logprobs() -> None:
    rollouts = collect(ScriptedGenerator(lambda p, i: "a b c", model_version="v2"))
    assert [r.completion_ids for r in rollouts] == [(1, 2, 3)] * 2
    assert [r.rollout_logprobs for r in rollouts] == [(-1.0,) * 3] * 2
    assert [r.policy_version for r in rollouts] == [2, 2]


def test_rollouts_lagging_more_than_max_policy_lag_are_refused() -> None:
    assert collect(ScriptedGenerator(lambda p, i: "a", model_version="v1"))  # lag 1: fine
    with pytest.raises(PolicyLagError, match="2 versions behind.*max_policy_lag is 1"):
        collect(ScriptedGenerator(lambda p, i: "a", model_version="v0"))
    with pytest.raises(PolicyLagError):
        collect(ScriptedGenerator(lambda p, i: "a", model_version="v1"), max_policy_lag=0)


class Edited(ScriptedGenerator):
    """Completions changed after generation, as a broken generator would send them."""

    def __init__(self, **changes: Any) -> None:
        super().__init__(lambda p, i: "a b", model_version="v2")
        self.changes = changes

    def generate(self, prompts: Any, **kwargs: Any) -> list[Completion]:
        return [replace(c, **self.changes) for c in super().generate(prompts, **kwargs)]


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"token_ids": ()}, RolloutError, "returned no token ids"),
        ({"token_logprobs": ()}, RolloutError, "per-token logprobs"),
        ({"num_tokens": 5}, RolloutError, "2 token ids for 5 tokens"),
        ({"token_ids": (1, 999)}, ServedModelMismatch, "outside the policy's vocabulary"),
        ({"model_version": "someone-else"}, ServedModelMismatch, "serves 'someone-else'"),
        ({"prompt_index": 3}, RolloutError, "says it answers prompt 3"),
    ],
)
def test_unusable_completions_are_refused(changes: dict, error: type, message: str) -> None:
    def version_of(v: str) -> int:
        if v != "v2":
            raise ServedModelMismatch(f"the generator serves {v!r}, not the policy")
        return 2

    with pytest.raises(error, match=message):
        collect(Edited(**changes), version_of=version_of)


def test_too_long_completions_are_refused() -> None:
    with pytest.raises(RolloutError, match="over max_completion_length 8"):
        collect(ScriptedGenerator(lambda p, i: " ".join("x" * 9), model_version="v2"))


def test_generator_model_calls_are_bounded_by_their_timeout() -> None:
    """Regression: GetModel had no deadline, so a sync waiting on a generator that accepts
    the connection but never answers would hang for ever."""
    import socket
    import threading

    import grpc

    from services.generator.client import GeneratorClient

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])  # and never speak
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        with GeneratorClient(address, timeout=600) as client:
            for call in (
                lambda: client.model_info(timeout=1.0),
                lambda: client.load_model(name="toy", version=2, timeout=1.0),
            ):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        silent.close()


def test_a_refused_batch_and_bad_rewards_are_rollout_errors() -> None:
    from astro_core.engines import InvalidRequest

    class Refusing(ScriptedGenerator):
        def generate(self, prompts: Any, **kwargs: Any) -> list[Completion]:
            raise InvalidRequest("prompt 0 has 9000 tokens; the model accepts at most 8191")

    with pytest.raises(RolloutError, match="refused the prompts: prompt 0 has 9000 tokens"):
        collect(Refusing(lambda p, i: ""))

    class NaNVerifier:
        def verify_batch(self, items: Any, rewards: Any) -> list[VerifyResult]:
            return [VerifyResult(True, float("nan"), "", "") for _ in items]

    with pytest.raises(RolloutError, match="reward nan"):
        collect_rollouts(
            ScriptedGenerator(lambda p, i: "a", model_version="v2"),
            NaNVerifier(),
            PROMPTS,
            SamplingSettings(2, 8),
            RewardMapping(),
            version_of=lambda v: 2,
            policy_version=2,
            max_policy_lag=0,
            vocab_size=100,
        )
