"""GRPO end to end on the toy task: the mean reward rises within a few dozen CPU steps.

colocate: the in-process HF engine updated in place, rewards from the VerifierPool.
"""

from __future__ import annotations

from pathlib import Path

from astro_core.training.config import load_train_config
from astro_core.training.grpo import train_grpo
from astro_core.training.grpo_config import GRPOConfig
from astro_core.training.job import TrainingServices
from astro_core.training.train_log import read_log
from tests.training import toy

toy_policy_dir = toy.toy_policy_dir  # fixtures
toy_prompts = toy.toy_prompts


def toy_config(model: Path, prompts: Path, out: Path, **fields) -> GRPOConfig:
    overrides = {
        "model": str(model),
        "dataset": str(prompts),
        "output_dir": str(out),
        "max_completion_length": 12,
        "max_steps": 30,
        "seed": 0,
        **fields,
    }
    return load_train_config(GRPOConfig, preset="cpu", overrides=overrides)


def rewards_of(out: Path) -> list[float]:
    return [r["reward_mean"] for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]


def test_colocate_grpo_raises_the_mean_reward(toy_policy_dir, toy_prompts, tmp_path) -> None:
    out = tmp_path / "run"
    config = toy_config(toy_policy_dir, toy_prompts, out, policy_sync="colocate")
    result = train_grpo(config, TrainingServices())
    rewards = rewards_of(out)
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-10:]) / 10
    assert first < 0.0, rewards  # the starting policy is right about a quarter of the time
    assert last > first + 0.6, rewards
    log = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    assert [r["policy_version"] for r in log] == list(range(1, 31))
    assert result.steps == 30
    assert (out / "checkpoint-30" / "model" / "config.json").is_file()
