"""The evaluation and analysis packages import in any order, without grpc or matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_IMPORTS = [
    "astro_core.analysis",
    "astro_core.evaluation",
    "astro_core.analysis.report",
    "astro_core.analysis.runs",
    "astro_core.evaluation.runner",
    "astro_core.evaluation.samples",
]


@pytest.mark.parametrize("module", FIRST_IMPORTS)
def test_importing_first(module: str) -> None:
    code = (
        f"import {module}, sys\n"
        "import astro_core.analysis, astro_core.evaluation\n"
        "assert 'grpc' not in sys.modules, 'astro_core must not import grpc'\n"
        "assert 'matplotlib' not in sys.modules, 'plots load only when a report is built'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-1500:]
