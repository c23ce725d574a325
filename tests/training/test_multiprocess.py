"""Real processes: two torchrun ranks on gloo compute the run one rank computes with twice
the accumulation, and a trainer killed with SIGKILL resumes onto the same trajectory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from astro_core.training.checkpointing import MODEL_DIR, TRAINER_STATE, complete_checkpoints
from astro_core.training.job import TrainingServices
from astro_core.training.sft import train_sft
from astro_core.training.train_log import LOG_FILE, read_log
from tests.conftest import REPO, free_port
from tests.training.conftest import losses, sft_config, write_traces

pytestmark = pytest.mark.slow


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def write_config(path: Path, **fields: object) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_two_ranks_equal_one_rank_with_twice_the_accumulation(
    tiny_model_dir: Path, tmp_path: Path, zero_stage: int
) -> None:
    traces = write_traces(tmp_path / "traces.jsonl", 30)  # 30 = 4 full steps of 6 + 6
    two = write_config(
        tmp_path / "two.yaml",
        model=str(tiny_model_dir),
        dataset=str(traces),
        output_dir=str(tmp_path / "two"),
        per_device_train_batch_size=3,
        gradient_accumulation_steps=1,
        save_steps=2,
        deepspeed={"zero_stage": zero_stage},
    )

    def torchrun() -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(free_port()), "-m", "astro_cli.main",
            "train", "sft", "--preset", "cpu", "--config", str(two),
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env=child_env(), cwd=REPO
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    result = torchrun()
    assert result.stdout.splitlines() == [  # one summary line, from rank 0
        f"sft finished: 5 steps; loss {losses(tmp_path / 'two')[5]:.4f}; "
        f"checkpoint {tmp_path / 'two' / 'checkpoint-5'}"
    ]
    one = sft_config(
        tiny_model_dir,
        traces,
        tmp_path / "one",
        gradient_accumulation_steps=2,
        per_device_train_batch_size=3,
        save_steps=2,
        deepspeed={"zero_stage": zero_stage},
    )
    train_sft(one, TrainingServices())
    complete = losses(tmp_path / "two")
    assert sorted(complete) == [1, 2, 3, 4, 5]
    assert complete == pytest.approx(losses(tmp_path / "one"), rel=1e-6)
    a = load_file(tmp_path / "two" / "checkpoint-5" / MODEL_DIR / "model.safetensors")
    b = load_file(tmp_path / "one" / "checkpoint-5" / MODEL_DIR / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5

    # Every rank saved its RNG state (and, under ZeRO-3, its partitions) at steps 2 and 4.
    state = tmp_path / "two" / "checkpoint-4" / "state"
    assert {p.name for p in state.glob("rng-*.pt")} == {"rng-0.pt", "rng-1.pt"}
    # As if the job had died after checkpoint 4: both ranks resume onto the same losses.
    shutil.rmtree(tmp_path / "two" / "checkpoint-5")
    result = torchrun()
    assert "(resumed after step 4)" in result.stdout
    assert losses(tmp_path / "two") == pytest.approx(complete, rel=1e-9)


def test_a_killed_run_resumes_onto_the_same_trajectory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    traces = write_traces(tmp_path / "traces.jsonl", 48)
    fields = {
        "max_steps": 40,
        "save_steps": 8,
        # Adapter dropout draws random numbers every step: the RNG state must resume too.
        "lora": {"r": 8, "alpha": 16, "dropout": 0.2},
        "learning_rate": 5e-3,
    }
    baseline = sft_config(tiny_model_dir, traces, tmp_path / "baseline", **fields)
    train_sft(baseline, TrainingServices())

    out = tmp_path / "killed"
    config = write_config(
        tmp_path / "run.yaml",
        **sft_config(tiny_model_dir, traces, out, **fields).model_dump(mode="json"),
    )
    command = [sys.executable, "-m", "astro_cli.main", "train", "sft", "--config", str(config)]
    process = subprocess.Popen(
        command, env=child_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-8" / TRAINER_STATE).exists():
            assert process.poll() is None, "the trainer ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = [step for step, _ in complete_checkpoints(out)]
    assert 40 not in saved, "the run finished before it was killed"
    resumed_from = saved[-1]

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(resumed after step {resumed_from})" in result.stdout
    steps = [r["step"] for r in read_log(out / LOG_FILE) if r["event"] == "log"]
    assert steps == list(range(1, 41))  # the dead run's steps after the checkpoint are gone
    expected = losses(tmp_path / "baseline")
    assert losses(out) == pytest.approx(expected, rel=1e-6)
    a = load_file(out / "checkpoint-40" / MODEL_DIR / "model.safetensors")
    b = load_file(tmp_path / "baseline" / "checkpoint-40" / MODEL_DIR / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
