"""Kill a real `astro eval` process midway (SIGKILL), rerun it: the uninterrupted summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astro_core.evaluation import iter_samples

REPO = Path(__file__).resolve().parents[2]
PROBLEMS = 16


def eval_command(model: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "astro_cli.main", "eval", "--model", str(model),
        "--benchmarks", "math500", "--limit", str(PROBLEMS), "--n", "4",
        "--max-tokens", "40", "--batch-problems", "2", "--out", str(out),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run(model: Path, out: Path) -> None:
    result = subprocess.run(
        eval_command(model, out), env=environment(), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_killed_eval_resumes_to_the_same_summary(tiny_model_dir: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(tiny_model_dir, whole)

    process = subprocess.Popen(
        eval_command(tiny_model_dir, killed),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        samples = killed / "samples.jsonl"
        deadline = time.monotonic() + 180
        while lines(samples) == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "the evaluation ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    written = lines(killed / "samples.jsonl")
    assert 0 < written < PROBLEMS * 4  # killed midway
    assert not (killed / "summary.json").exists()

    run(tiny_model_dir, killed)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary == json.loads((whole / "summary.json").read_text())
    resumed = list(iter_samples(killed / "samples.jsonl"))
    assert len(resumed) == len({s.key for s in resumed}) == PROBLEMS * 4
    reference = {s.key: s for s in iter_samples(whole / "samples.jsonl")}
    assert all(reference[s.key] == s for s in resumed)  # the very same samples were drawn
