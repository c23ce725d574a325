"""The per-step training log (JSONL) and progress sinks, shared by every algorithm.

    logger = TrainLogger(output_dir, stage="sft", run_id="", total_steps=100,
                         sinks=[ConsoleProgress()])
    logger.log(step, {"loss": 1.9, "learning_rate": 3e-6})       # every logging step
    logger.checkpoint(step, info_or_none, directory)             # every save
    logger.close()

`output_dir/train_log.jsonl` gets one JSON object a line: `{"event": "log", "step", "time",
...metrics}` or `{"event": "checkpoint", "step", "time", "path", "checkpoint": "name:3"}`.
Every event also goes to each sink as a `TrainProgress` (the console bar here; the trainer
process adds a Redis stream sink). Only the main rank logs: other ranks pass enabled=False.
A resumed run first drops the lines after the step it resumes from, so the file reads as
one uninterrupted run. `close()` closes the sinks; a sink's close must be idempotent (the
process that made it closes it too, in case training failed before a logger existed).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from astro_core.checkpoints import CheckpointInfo

LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainProgress:
    """A trainer's report at a logging step or a save (mirrors the TrainProgress message)."""

    run_id: str
    stage: str
    step: int
    total_steps: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    checkpoint: CheckpointInfo | None = None


@runtime_checkable
class ProgressSink(Protocol):
    """Receives every progress event of the main rank. Must not raise for transient trouble
    (a training run outlives a monitoring outage); close() may be called more than once."""

    def report(self, progress: TrainProgress) -> None: ...

    def close(self) -> None: ...


def format_metrics(metrics: Mapping[str, float], keys: Sequence[str] = ()) -> str:
    """`loss=1.234 lr=3e-06 ...`: the named keys (in order) if present, else all."""
    chosen = [k for k in keys if k in metrics] if keys else list(metrics)
    return " ".join(f"{_short(k)}={_number(metrics[k])}" for k in chosen)


def _short(key: str) -> str:
    return {"learning_rate": "lr", "tokens_per_second": "tok/s"}.get(key, key)


def _number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if abs(value) < 1e-2:
        return f"{value:.2e}"
    return f"{value:.4g}"


class ConsoleProgress:
    """A progress bar on a terminal; one line per event otherwise (Job logs, CI)."""

    KEYS = ("loss", "reward_mean", "learning_rate", "grad_norm", "tokens_per_second")

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._task: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=self.stream),
            )

    def report(self, progress: TrainProgress) -> None:
        detail = format_metrics(progress.metrics, self.KEYS)
        if progress.checkpoint is not None:
            detail = f"saved {progress.checkpoint.ref}"
        if self._bar is None:
            where = f"{progress.stage} step {progress.step}/{progress.total_steps}"
            self.stream.write(f"{where} {detail}\n")
            self.stream.flush()
            return
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(progress.stage, total=progress.total_steps, detail="")
        self._bar.update(self._task, completed=progress.step, detail=detail)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class TrainLogger:
    """Writes the JSONL log and fans every event out to the sinks (main rank only)."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        stage: str,
        run_id: str = "",
        total_steps: int,
        sinks: Sequence[ProgressSink] = (),
        enabled: bool = True,
    ) -> None:
        self.path = Path(output_dir) / LOG_FILE
        self.stage = stage
        self.run_id = run_id
        self.total_steps = total_steps
        self.sinks = list(sinks)
        self.enabled = enabled

    def resume_at(self, step: int) -> None:
        """Drop log lines after `step` (written by a run that died before its next save)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in read_log(self.path) if int(line.get("step", 0)) <= step]
        with self.path.open("w", encoding="utf-8") as handle:
            for line in kept:
                handle.write(json.dumps(line) + "\n")

    def _write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _report(self, progress: TrainProgress) -> None:
        for sink in self.sinks:
            sink.report(progress)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        self._write({"event": "log", "step": step, "time": time.time(), **values})
        self._report(TrainProgress(self.run_id, self.stage, step, self.total_steps, values))

    def checkpoint(
        self,
        step: int,
        info: CheckpointInfo | None,
        directory: str | Path,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        if not self.enabled:
            return
        record: dict[str, Any] = {
            "event": "checkpoint",
            "step": step,
            "time": time.time(),
            "path": str(directory),
        }
        if info is not None:
            record["checkpoint"] = info.ref
        self._write(record)
        if info is not None:
            values = {k: float(v) for k, v in (metrics or {}).items()}
            self._report(
                TrainProgress(self.run_id, self.stage, step, self.total_steps, values, info)
            )

    def close(self) -> None:
        """Close the sinks (each may be closed again by whoever made it: closing twice is
        harmless)."""
        for sink in self.sinks:
            sink.close()

    def note(self, text: str) -> None:
        """A human-readable line for whoever watches (stderr; main rank only)."""
        if self.enabled:
            sys.stderr.write(f"{self.stage}: {text}\n")
            sys.stderr.flush()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a train_log.jsonl, skipping a torn last line (a killed writer)."""
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
