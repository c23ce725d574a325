"""GRPO against the real services: generator, verifier and registry on loopback.

Registry sync: each new policy is saved, registered and loaded by the generator service
(LoadModel); rollouts come over gRPC with their token ids and log-probabilities, rewards from
the verifier service. Also: a generator serving another model is refused, a sync that the
generator never completes times out, and rollouts from a lagging generator are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astro_core.training.job import TrainingServices
from astro_core.training.policy_sync import SyncTimeout
from astro_core.training.rollouts import PolicyLagError, ServedModelMismatch
from astro_core.training.train_log import read_log
from services.generator.client import GeneratorClient
from services.generator.server import register as register_generator
from services.registry.client import RegistryClient
from services.registry.server import register as register_registry
from services.runtime.config import ServiceConfig
from services.runtime.redis_store import connect_redis
from services.testing import ServiceThread
from services.verifier.client import VerifierClient
from services.verifier.server import register as register_verifier
from tests.training import toy
from tests.training.test_grpo_train import rewards_of, toy_config

toy_policy_dir = toy.toy_policy_dir  # fixtures
toy_prompts = toy.toy_prompts


@dataclass
class Platform:
    registry: ServiceThread
    verifier: ServiceThread
    generator: ServiceThread

    def services(self, stack: list[Any], generator: Any = None) -> TrainingServices:
        store = RegistryClient(self.registry.client_config())
        gen = generator or GeneratorClient(self.generator.client_config(), timeout=120)
        verifier = VerifierClient(self.verifier.client_config(), timeout_seconds=120)
        stack += [store, gen, verifier]
        return TrainingServices(store=store, generator=gen, verifier=verifier)

    def reset_generator(self) -> None:
        """Back to the starting policy toy:1 (a test may have left another version)."""
        with GeneratorClient(self.generator.client_config()) as client:
            client.load_model(name="toy", version=1)


@pytest.fixture(scope="module")
def platform(toy_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    redis = connect_redis(url=None, directory=root / "redis")
    registry = ServiceThread(
        "registry",
        register_registry,
        ServiceConfig(
            port=0,
            metrics_port=None,
            redis_url=redis.url,
            grace_seconds=0.5,
            settings={"artifact_root": str(root / "artifacts")},
        ),
    ).start()
    with RegistryClient(registry.client_config()) as client:
        client.register("toy", toy_policy_dir, aliases=["sft"])  # toy:1, the starting policy
    verifier = ServiceThread(
        "verifier",
        register_verifier,
        ServiceConfig(port=0, metrics_port=None, grace_seconds=0.5, settings={"workers": 1}),
    ).start()
    generator = ServiceThread(
        "generator",
        register_generator,
        ServiceConfig(
            port=0,
            metrics_port=None,
            grace_seconds=0.5,
            settings={
                "model": {"name": "toy", "version": 1},
                "registry_address": registry.address,
                "cache_dir": str(root / "cache"),
                "engine": {"device": "cpu", "cpu_threads": 1},
            },
        ),
    ).start()
    try:
        yield Platform(registry, verifier, generator)
    finally:
        generator.stop()
        verifier.stop()
        registry.stop()
        redis.close()


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for client in opened:
        client.close()


def run(config: Any, services: TrainingServices) -> Any:
    from astro_core.training.grpo import train_grpo

    return train_grpo(config, services)


def test_registry_sync_grpo_raises_the_mean_reward(
    platform: Platform, toy_prompts: Path, tmp_path: Path, clients: list[Any]
) -> None:
    platform.reset_generator()
    out = tmp_path / "run"
    config = toy_config(
        "toy:1", toy_prompts, out, policy_sync="registry", output_name="toy-rl", seed=0
    )
    services = platform.services(clients)
    result = run(config, services)
    rewards = rewards_of(out)
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-10:]) / 10
    assert first < 0.0 and last > first + 0.6, rewards
    # the generator serves the policy of the last push (after step 29), registered as grpo
    served = services.generator.model_info().version
    info = services.store.get("toy-rl", alias="latest")
    assert info.stage == "grpo" and info.parent_version == 1
    log = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    assert all(r["sync_seconds"] > 0 for r in log[1:])
    assert served.startswith("toy-rl:")
    # earlier sync versions were deleted: the registry holds the final checkpoint and the
    # version the generator serves, not one version per step
    assert len(services.store.list("toy-rl")) <= 3
    assert result.registered and result.registered[-1].name == "toy-rl"


def test_a_generator_serving_another_model_is_refused(
    platform: Platform, toy_prompts: Path, tiny_model_dir: Path, tmp_path: Path, clients
) -> None:
    platform.reset_generator()
    config = toy_config(
        tiny_model_dir, toy_prompts, tmp_path / "run", policy_sync="registry", output_name="x"
    )
    with pytest.raises(ServedModelMismatch, match=r"serves 'toy:1'.*not the policy"):
        run(config, platform.services(clients))


def test_a_sync_the_generator_never_completes_times_out(
    platform: Platform, toy_prompts: Path, tmp_path: Path, clients: list[Any]
) -> None:
    """The generator does not follow any alias, so waiting for it to serve the new version
    must end in SyncTimeout, not a hang."""
    platform.reset_generator()
    config = toy_config(
        "toy:1",
        toy_prompts,
        tmp_path / "run",
        policy_sync="registry",
        output_name="toy-rl-timeout",
        registry_load="follow_alias",
        sync_timeout_seconds=2,
    )
    with pytest.raises(SyncTimeout, match="still serves 'toy:1'"):
        run(config, platform.services(clients))
    log = [r for r in read_log(tmp_path / "run" / "train_log.jsonl") if r["event"] == "log"]
    assert len(log) == 1  # step 1 trained; pushing its policy timed out


class LaggingGenerator(GeneratorClient):
    """TEST DOUBLE around the real client: before generating it loads the starting policy
    again, like a replica that never got the new weights."""

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> Any:
        self.load_model(name="toy", version=1)
        return super().generate(prompts, **kwargs)


def test_rollouts_from_a_lagging_generator_are_refused(
    platform: Platform, toy_prompts: Path, tmp_path: Path, clients: list[Any]
) -> None:
    platform.reset_generator()
    config = toy_config(
        "toy:1",
        toy_prompts,
        tmp_path / "run",
        policy_sync="registry",
        output_name="toy-rl-lag",
        max_policy_lag=1,
    )
    lagging = LaggingGenerator(platform.generator.client_config(), timeout=120)
    # version 0 rollouts are fine at steps 0 and 1 (lag 1); at step 2 the lag is 2
    with pytest.raises(PolicyLagError, match=r"toy:1 \(policy version 0\), 2 versions behind"):
        run(config, platform.services(clients, generator=lagging))
    log = [r for r in read_log(tmp_path / "run" / "train_log.jsonl") if r["event"] == "log"]
    assert len(log) == 2


def test_cli_refuses_a_generator_serving_another_model_in_one_line(
    platform: Platform, toy_prompts: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.training.test_grpo_cli import astro, grpo_args, one_line_error

    platform.reset_generator()
    code, out, err = astro(
        *grpo_args(tiny_model_dir, toy_prompts, tmp_path / "o"),
        "--generator", platform.generator.address,
        "--verifier", platform.verifier.address,
        "--registry", platform.registry.address,
        "--output-name", "x",
    )  # fmt: skip
    one_line_error(code, out, err, 1, "the generator serves 'toy:1'")


def test_select_prompts_through_the_services(
    platform: Platform, toy_prompts: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.training.test_grpo_cli import astro, one_line_error

    platform.reset_generator()
    common = [
        "train", "select-prompts", "--dataset", str(toy_prompts),
        "--generator", platform.generator.address,
        "--verifier", platform.verifier.address,
        "--registry", platform.registry.address,
        "--num-samples", "4", "--max-completion-length", "12", "--low", "0.2",
    ]  # fmt: skip
    out_file = tmp_path / "kept.jsonl"
    code, out, err = astro(*common, "--model", "toy@sft", "--output", str(out_file))
    assert code == 0, err
    kept = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert all(0.2 < row["pass_rate"] < 1 for row in kept) and out.startswith("kept ")
    code, out, err = astro(*common, "--model", str(tiny_model_dir), "--output", str(out_file))
    one_line_error(code, out, err, 1, "serves 'toy:1', not the starting policy")


def test_registry_sync_with_a_generator_following_the_alias(
    platform: Platform, toy_policy_dir: Path, toy_prompts: Path, tmp_path: Path, clients
) -> None:
    """registry_load follow_alias: no LoadModel call; the trainer registers each version
    (moving `latest`) and waits until the following generator serves it."""
    with RegistryClient(platform.registry.client_config()) as store:
        store.register("toy-follow", toy_policy_dir)  # toy-follow:1, the starting policy
    follower = ServiceThread(
        "generator",
        register_generator,
        ServiceConfig(
            port=0,
            metrics_port=None,
            grace_seconds=0.5,
            settings={
                "model": {"name": "toy-follow", "alias": "latest"},
                "follow_alias": "latest",
                "registry_address": platform.registry.address,
                "cache_dir": str(tmp_path / "cache"),
                "engine": {"device": "cpu", "cpu_threads": 1},
            },
        ),
    ).start()
    try:
        generator = GeneratorClient(follower.client_config(), timeout=120)
        config = toy_config(
            "toy-follow:1",
            toy_prompts,
            tmp_path / "run",
            policy_sync="registry",
            registry_load="follow_alias",
            output_name="toy-follow",
            max_steps=3,
            sync_timeout_seconds=60,
        )
        services = platform.services(clients, generator=generator)
        run(config, services)
        log = [r for r in read_log(tmp_path / "run" / "train_log.jsonl") if r["event"] == "log"]
        assert [r["policy_version"] for r in log] == [1, 2, 3]
        assert all(r["sync_seconds"] > 0 for r in log[1:])
        # versions 2 and 3 were pushed for steps 1 and 2 (2 deleted once 3 was served); the
        # final checkpoint, 4, moved `latest` too, so the follower may have loaded it already
        assert generator.model_info().version in ("toy-follow:3", "toy-follow:4")
        versions = {info.version for info in services.store.list("toy-follow")}
        assert versions == {1, 3, 4}
        assert services.store.get("toy-follow", alias="latest").stage == "grpo"
    finally:
        follower.stop()
