"""The trainer's per-step JSONL log: one JSON object a line with `step` and metrics.

Read tolerantly, because the log may come from a trainer still running or from another
version of it: lines that are not JSON objects with a numeric `step` are skipped (and
counted), nested objects are flattened ("metrics": {"loss": 1} gives "metrics/loss"), only
finite numbers are kept, and the lines of one step are merged, a later value winning (a
checkpoint event after the step's metrics; a resumed trainer's repeat). A metric is looked
up under several names (`METRIC_NAMES`), matching a flattened name or its last part, so
"reward_mean" finds "train/reward_mean" too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "completion_length": (
        "completion_length_mean",
        "completion_length",
        "response_length_mean",
        "mean_completion_length",
    ),
    "reward": ("reward_mean", "reward", "rewards_mean", "mean_reward"),
    "backtracks": ("backtracks_mean", "backtracks", "mean_backtracks"),
    "loss": ("loss",),
}
MAX_LINE_CHARS = 1_000_000


@dataclass
class TrainLog:
    name: str
    path: Path
    rows: list[dict[str, float]] = field(default_factory=list)  # sorted by step
    skipped_lines: int = 0

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric (a key of METRIC_NAMES, or any flattened name)."""
        names = METRIC_NAMES.get(metric, (metric,))
        steps, values = [], []
        for row in self.rows:
            value = _lookup(row, names)
            if value is not None:
                steps.append(row["step"])
                values.append(value)
        return steps, values


def _lookup(row: dict[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in row:
            return row[name]
    for name in names:
        for key, value in row.items():
            if key.rsplit("/", 1)[-1] == name:
                return value
    return None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                flat[name] = float(value)
    return flat


def read_train_log(path: str | Path) -> TrainLog:
    """Read a trainer log; raises ValueError if it is missing or has no step at all."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"train log not found: {file}")
    by_step: dict[float, dict[str, float]] = {}
    skipped = 0
    with file.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                skipped += 1
                continue
            try:
                data = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            row = _flatten(data) if isinstance(data, dict) else {}
            if "step" not in row:
                skipped += 1
                continue
            # merged, not replaced: a checkpoint event follows its step's metrics
            by_step[row["step"]] = {**by_step.get(row["step"], {}), **row}
    if not by_step:
        raise ValueError(f"train log {file} has no line with a numeric step")
    rows = [by_step[s] for s in sorted(by_step)]
    return TrainLog(file.stem, file, rows, skipped)
