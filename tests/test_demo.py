"""`astro demo` (what `make demo` runs) completes and leaves every artifact as a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from astro_core.trees import read_trees

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage(tmp_path: Path, shared_data: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "demo",
            "--data-dir",
            str(tmp_path),
            "--limit",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stages = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in stages] == [f"[{i}/6" for i in range(1, 7)]
    trees = list(read_trees(tmp_path / "trees.jsonl"))
    assert len(trees) == 2 and all(len(t.nodes) > 1 for t in trees)
    for style in ("astro", "direct"):
        summary = json.loads((tmp_path / f"traces.{style}.summary.json").read_text())
        assert summary["style"] == style
    assert (tmp_path / "tree.svg").read_text().lstrip().startswith(("<?xml", "<svg", "<!--"))
    pulled = tmp_path / "pulled-model"
    assert (pulled / "config.json").exists() and (pulled / "model.safetensors").exists()
    assert "platform stopped cleanly" in result.stdout


def test_demo_rejects_a_missing_problems_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "demo",
            "--problems",
            str(tmp_path / "none.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --problems") and len(result.stderr.splitlines()) == 1
