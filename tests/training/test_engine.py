"""The DeepSpeed set-up: schedule, generated config, launcher variables, and DeepSpeed kept
off stdout for everything that merely saves a model."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astro_core.training.config import DeepSpeedSettings
from astro_core.training.engine import (
    LAUNCHER_VARIABLES,
    deepspeed_config,
    init_distributed,
    schedule_factor,
    shutdown_distributed,
    uses_bf16,
)
from tests.conftest import REPO
from tests.training.conftest import sft_config


def test_warmup_then_cosine_to_zero() -> None:
    factors = [schedule_factor(s, kind="cosine", warmup_steps=4, total_steps=20) for s in range(21)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[12] == pytest.approx(0.5)  # half way through the decay
    assert factors[20] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    linear = [schedule_factor(s, kind="linear", warmup_steps=0, total_steps=10) for s in (0, 5)]
    assert linear == pytest.approx([1.0, 0.5])
    assert schedule_factor(7, kind="constant", warmup_steps=2, total_steps=10) == 1.0


def test_generated_deepspeed_config(tmp_path: Path) -> None:
    config = sft_config(
        "m",
        tmp_path / "d",
        tmp_path / "o",
        per_device_train_batch_size=3,
        gradient_accumulation_steps=5,
        max_grad_norm=0.5,
        deepspeed={"zero_stage": 3, "extra": {"zero_optimization": {"overlap_comm": True}}},
    )
    ds = deepspeed_config(config, world_size=4, bf16=True)
    assert ds["train_batch_size"] == 3 * 5 * 4
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 5
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["overlap_comm"] is True  # extra merges, keeps the rest


def test_bf16_only_where_cuda_is(tmp_path: Path) -> None:
    import torch

    auto = sft_config("m", tmp_path / "d", tmp_path / "o", bf16=None)
    forced = sft_config("m", tmp_path / "d", tmp_path / "o", bf16=True)
    assert uses_bf16(auto) == torch.cuda.is_available()
    assert uses_bf16(forced) == torch.cuda.is_available()


@pytest.fixture
def clean_launcher_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_launcher_a_group_of_one_that_leaves_no_trace(
    clean_launcher_env: pytest.MonkeyPatch,
) -> None:
    env = init_distributed(DeepSpeedSettings())
    try:
        assert (env.rank, env.world_size, env.local_rank, env.backend) == (0, 1, 0, "gloo")
        assert set(env.own_variables) == set(LAUNCHER_VARIABLES)
    finally:
        shutdown_distributed(env)
    assert not any(name in os.environ for name in LAUNCHER_VARIABLES)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "1"}, "launcher variables .* are missing"),
        (
            {
                "WORLD_SIZE": "2",
                "RANK": "2",
                "LOCAL_RANK": "0",
                "MASTER_ADDR": "x",
                "MASTER_PORT": "1",
            },
            r"RANK=2 is not in \[0, WORLD_SIZE=2\)",
        ),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ],
)
def test_bad_launcher_variables(
    clean_launcher_env: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        clean_launcher_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        init_distributed(DeepSpeedSettings())


def test_nccl_needs_cuda(clean_launcher_env: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(ValueError, match="nccl needs CUDA"):
        init_distributed(DeepSpeedSettings(backend="nccl"))


def test_saving_a_model_prints_nothing_on_stdout(tmp_path: Path) -> None:
    """transformers/accelerate import deepspeed when saving; its accelerator probe used to
    print 'Setting accelerator to CPU' on stdout (breaking `astro demo` output)."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env["PYTHONPATH"] = str(REPO)
    code = (
        "from astro_core.models.tiny import build_tiny_model; "
        f"build_tiny_model({str(tmp_path / 'm')!r}); "
        "import deepspeed"  # whether or not saving imported it already
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Setting accelerator" not in result.stderr


def test_schedule_factor_is_finite_for_one_step() -> None:
    assert math.isfinite(schedule_factor(0, kind="cosine", warmup_steps=0, total_steps=1))
