"""GRPO end to end on the toy task: the mean reward rises within a few dozen CPU steps.

colocate: the in-process HF engine updated in place, rewards from the VerifierPool.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_resumed_run_continues_the_same_trajectory(toy_policy_dir, toy_prompts, tmp_path):
    """Stopped after checkpoint 2 (its later checkpoint and log lines gone, as when killed),
    the run resumes from checkpoint 2 and steps 3-4 repeat the uninterrupted run exactly:
    same prompts, same sampled completions (seeded), same weights."""
    import shutil

    out = tmp_path / "run"
    config = toy_config(
        toy_policy_dir, toy_prompts, out, policy_sync="colocate", max_steps=4, save_steps=2
    )
    train_grpo(config, TrainingServices())
    full = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    shutil.rmtree(out / "checkpoint-4")
    result = train_grpo(config, TrainingServices())
    assert result.resumed_from == 2
    again = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    keys = ("loss", "reward_mean", "completion_length_mean", "grad_norm", "clip_ratio")
    for before, after in zip(full[2:], again[2:], strict=True):
        assert {k: before[k] for k in keys} == {k: after[k] for k in keys}
    assert any(r["grad_norm"] > 0 for r in full[2:])  # something was learned in between


def test_lora_adapters_are_merged_into_the_colocated_engine(
    toy_policy_dir, toy_prompts, tmp_path
) -> None:
    """The engine generates with base + adapters after every push: its log-probabilities
    equal the trainer's on each fresh batch (ratio 1). Pushing the bare base weights would
    leave the engine one update behind and the ratio off 1 from step 2 on."""
    out = tmp_path / "run"
    config = toy_config(
        toy_policy_dir,
        toy_prompts,
        out,
        policy_sync="colocate",
        max_steps=4,
        learning_rate=5e-3,
        lora={"r": 4, "alpha": 8},
    )
    train_grpo(config, TrainingServices())
    log = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    assert any(r["grad_norm"] > 0 for r in log[:-1])
    for r in log:
        if r["trained_completions"]:
            assert abs(r["ratio_mean"] - 1) < 1e-4, r
    saved = out / "checkpoint-4" / "model"
    assert not any("lora" in p.name for p in saved.iterdir())  # a plain, merged model


def test_beta_loads_a_reference_and_logs_the_kl(toy_policy_dir, toy_prompts, tmp_path) -> None:
    out = tmp_path / "run"
    config = toy_config(
        toy_policy_dir,
        toy_prompts,
        out,
        policy_sync="colocate",
        max_steps=3,
        beta=0.1,
        learning_rate=5e-3,
    )
    train_grpo(config, TrainingServices())
    log = [r for r in read_log(out / "train_log.jsonl") if r["event"] == "log"]
    kls = [r["kl"] for r in log]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the reference
    assert all(k >= 0 for k in kls) and max(kls[1:]) > 1e-6, kls
