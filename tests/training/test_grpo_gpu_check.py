"""`benchmarks/gpu/check.py --cpu-smoke --checks grpo`: the GPU check's GRPO path runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_grpo_gpu_check_smoke_trains_and_reports(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path / "out"), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the script finds the repository itself (as on the GPU box)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu" / "check.py"), "--cpu-smoke",
         "--checks", "grpo"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["service_modules_imported"] == []  # colocated: no grpc, redis or services
    [grpo] = report["results"]
    assert grpo["check"] == "grpo" and grpo["steps"] == 2 and grpo["timed_steps"] == 1
    assert grpo["trained_completions"] > 0  # an update was timed, not only skipped groups
    assert grpo["ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # engine in sync with trainer
    assert grpo["seconds_per_step"] > 0 and grpo["generation_seconds"] > 0
    assert "[grpo] on cpu" in result.stdout


def test_an_unknown_check_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu" / "check.py"), "--cpu-smoke",
         "--checks", "rlhf"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "unknown check 'rlhf'" in result.stderr
