"""`benchmarks/gpu/check.py --cpu-smoke`: the GPU check's path runs here, without services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_smoke_runs_the_trainer_and_writes_its_figures(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path / "out"), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the script finds the repository itself (as on the GPU box)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu" / "check.py"), "--cpu-smoke"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["service_modules_imported"] == []  # no grpc, redis or services
    (sft,) = [r for r in report["results"] if r["check"] == "sft"]
    assert sft["steps"] == 4 and sft["timed_steps"] == 3
    assert sft["tokens_per_second"] > 0 and sft["model_tflops_per_second"] > 0
    assert sft["mfu"] is None  # no peak is known for a CPU
    assert "[sft] on cpu" in result.stdout and "tokens_per_second" in result.stdout


def test_peaks_by_gpu_name() -> None:
    sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
    try:
        from check import peak_tflops
    finally:
        sys.path.pop(0)
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("Tesla T4") is None
