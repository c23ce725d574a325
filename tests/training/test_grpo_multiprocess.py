"""GRPO on two torchrun ranks (gloo): each rank samples its own prompts with its own
colocated engine; losses and counts are over both ranks, and every engine stays in sync with
the (ZeRO-sharded) policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from astro_core.training.train_log import LOG_FILE, read_log
from tests.conftest import REPO, free_port
from tests.training import toy

toy_policy_dir = toy.toy_policy_dir  # fixtures
toy_prompts = toy.toy_prompts
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_two_rank_colocated_grpo(toy_policy_dir, toy_prompts, tmp_path, zero_stage) -> None:
    config = tmp_path / "grpo.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": str(toy_policy_dir),
                "dataset": str(toy_prompts),
                "output_dir": str(tmp_path / "run"),
                "max_steps": 3,
                "max_completion_length": 12,
                "per_device_train_batch_size": 8,
                "learning_rate": 5e-3,
                "deepspeed": {"zero_stage": zero_stage},
            }
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(free_port()), "-m", "astro_cli.main",
        "train", "grpo", "--preset", "cpu", "--config", str(config),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[0].startswith("grpo finished: 3 steps")
    log = [r for r in read_log(tmp_path / "run" / LOG_FILE) if r["event"] == "log"]
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        # 2 ranks x 2 prompts x 4 completions, all counted on rank 0's log line
        assert r["completion_tokens"] > 0 and r["trained_completions"] <= 16
        assert 16 * r["completion_length_mean"] == pytest.approx(r["completion_tokens"])
        if r["trained_completions"]:
            assert abs(r["ratio_mean"] - 1) < 1e-4, r  # every rank's engine got the update
    trained = [r for r in log if r["trained_completions"]]
    assert trained and all(r["grad_norm"] > 0 for r in trained)
    assert (tmp_path / "run" / "checkpoint-3" / "model" / "config.json").is_file()
