"""What a stage runner is given (StageContext) and returns (StageResult).

A runner is a blocking function `run(ctx, services) -> StageResult` on the driver's thread.
It reads its inputs through `ctx.input_path` / `ctx.input_ref`, writes files under
`ctx.stage_dir` (atomically: `write_atomic`), reports progress with `ctx.report`, and calls
`ctx.check()` (or `ctx.sleep`) often: that raises StageCancelled when the run was cancelled
(the runner stops its work, e.g. cancels its search or trainer job, and re-raises) and
DriverStopping when this replica is stopping or lost the run to another (the runner leaves
the work to whoever resumes the run).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_core.pipeline.plan import PlannedStage
from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.store import RunStore

PROGRESS_INTERVAL_SECONDS = 0.5
RUN_CANCELLED = "run cancelled"


class StageCancelled(Exception):
    """The run was cancelled: stop the stage's work and re-raise."""


class DriverStopping(Exception):
    """This replica stops driving the run (shutdown, or another replica took it over)."""


class StageFailed(Exception):
    """The stage cannot complete; the message becomes the stage's and the run's message."""


@dataclass
class StageResult:
    """What a stage made: artifacts by kind (paths, registry refs, ids) and headline figures."""

    artifacts: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class StageContext:
    run_id: str
    stage: PlannedStage
    attempt: int
    spec: RunSpec
    output_dir: Path
    inputs: dict[str, str]  # the run's own inputs, by kind (problems, rl_prompts, eval.<label>)
    artifacts: dict[str, str]  # every artifact recorded before this stage, "<stage>.<kind>"
    handle: dict[str, Any]  # what ran the stage in an earlier attempt (search id, job)
    store: RunStore
    # "cancelled" when the run was cancelled, "stopping" when this replica lets go, else None
    interrupted: Callable[[], str | None]
    wake: threading.Event = field(default_factory=threading.Event)
    _last_report: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    @property
    def stage_dir(self) -> Path:
        path = self.output_dir / self.stage.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def source(self, kind: str) -> str:
        """Where input `kind` of this stage comes from: `<stage>.<kind>` or `input.<kind>`."""
        try:
            return self.stage.inputs[kind]
        except KeyError as exc:
            raise StageFailed(f"the plan gives this stage no input {kind!r}") from exc

    def input_ref(self, kind: str) -> str:
        """The value of input `kind`: a path, a registry reference or an id."""
        source = self.source(kind)
        if source == "input.base_model":
            return self.spec.base_model.describe()
        if source.startswith("input."):
            value = self.inputs.get(source.removeprefix("input."))
        else:
            value = self.artifacts.get(source)
        if not value:
            raise StageFailed(f"input {source} was not recorded")
        return value

    def input_path(self, kind: str) -> Path:
        path = Path(self.input_ref(kind))
        if not path.exists():
            raise StageFailed(f"input {self.source(kind)} is missing: {path}")
        return path

    def check(self) -> None:
        reason = self.interrupted()
        if reason == "cancelled":
            raise StageCancelled(RUN_CANCELLED)
        if reason is not None:
            raise DriverStopping(reason)

    def sleep(self, seconds: float) -> None:
        """Wait (checking first and after); wakes early when the run is cancelled."""
        self.check()
        self.wake.wait(seconds)
        self.check()

    def report(
        self,
        done: int,
        total: int,
        metrics: Mapping[str, float] | None = None,
        message: str = "",
        force: bool = False,
    ) -> None:
        """Record progress; events are logged at most every PROGRESS_INTERVAL_SECONDS unless
        forced or the stage reached its total."""
        now = time.monotonic()
        if not force and done < total and now - self._last_report < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_report = now
        self.store.progress(
            self.run_id,
            self.stage.name,
            done,
            total,
            {k: float(v) for k, v in (metrics or {}).items()},
            message,
            elapsed=now - self._started,
        )

    def save_handle(self, handle: Mapping[str, Any]) -> None:
        self.handle = dict(handle)
        self.store.set_handle(self.run_id, self.stage.name, handle)


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write `path` through a temporary file renamed over it: a reader (or a resume after a
    crash) sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(artifacts: Mapping[str, str], root: Path) -> dict[str, str]:
    """sha256 of each artifact that is a file inside the run's directory."""
    digests = {}
    for kind, value in artifacts.items():
        path = Path(value)
        if path.is_absolute() and path.is_file() and path.resolve().is_relative_to(root.resolve()):
            digests[kind] = sha256_file(path)
    return digests
