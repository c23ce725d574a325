"""The trainer's per-step JSONL log, read tolerantly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_core.analysis.trainlog import read_train_log


def test_metrics_by_step_with_missing_keys_torn_lines_and_repeats(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [
        {"step": 2, "loss": 0.5, "reward_mean": 0.1, "completion_length_mean": 120},
        {"step": 1, "loss": 0.9, "reward_mean": -0.2, "completion_length_mean": 100},
        {"step": 3, "loss": 0.4},  # no reward this step
        {"event": "checkpoint saved"},  # no step
        {"step": 3, "loss": 0.3, "metrics": {"backtracks_mean": 1.5}},  # resumed: step 3 again
        {"step": 4, "train/reward_mean": 0.6, "loss": float("nan"), "note": "text"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "[1, 2]\nnot json\n" + '{"step": 5, "lo'
    path.write_text(text)
    log = read_train_log(path)
    assert log.name == "train" and [r["step"] for r in log.rows] == [1, 2, 3, 4]
    assert log.skipped_lines == 4  # no step, a list, not JSON, the torn last line
    assert log.series("loss") == ([1, 2, 3], [0.9, 0.5, 0.3])  # NaN dropped, last step-3 line
    assert log.series("reward") == ([1, 2, 4], [-0.2, 0.1, 0.6])  # "train/reward_mean" found
    assert log.series("completion_length") == ([1, 2], [100, 120])
    assert log.series("backtracks") == ([3], [1.5])  # nested "metrics" flattened
    assert log.series("kl") == ([], [])


def test_unusable_logs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train log not found"):
        read_train_log(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"loss": 1}\n')
    with pytest.raises(ValueError, match="no line with a numeric step"):
        read_train_log(empty)
