"""A coordinator replica's run driver: claim runs from the queue, advance their stages.

Runs reach replicas through the `astro:run:queue` stream's consumer group (the same
mechanism as search tasks: services/coordinator/streams.py). Each claimed run gets a thread
that walks its stages in order: a stage that succeeded is never started again; the next one
starts only once the one before it recorded its artifacts. A heartbeat keeps the held
entries fresh; a replica that dies (kill -9 included) leaves them idle, and another replica
(or this one, restarted) reclaims them and resumes each run at the stage it was in, starting
that stage again (attempt + 1).

Ends of a stage: success records its artifacts (with their sha256); a failure marks the
stage and the run failed with its message (a transient error, e.g. a service unreachable,
first starts the stage again, `stage_retries` times); a cancelled run makes the runner stop
its work (its search, its trainer job) and the stage is marked cancelled; a replica that
stops gracefully hands its runs back to the queue at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from astro_core.pipeline.plan import PlannedStage
from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.context import (
    RUN_CANCELLED,
    DriverStopping,
    StageCancelled,
    StageContext,
    StageFailed,
    file_digests,
    sha256_file,
)
from services.coordinator.runs.stages import Runner, StageServices, runners
from services.coordinator.runs.store import FINAL_STATES, RunRecord, RunStore
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.worker import consumer_name, describe, is_retryable

log = logging.getLogger("astro.coordinator.runs")

STATE_POLL_SECONDS = 0.5  # how stale a runner's view of "cancelled" may be


@dataclass
class _Held:
    entry_id: str
    run_id: str
    thread: threading.Thread | None = None
    lost: bool = False  # another replica took the entry over
    wake: threading.Event = field(default_factory=threading.Event)


class RunDriver:
    def __init__(
        self,
        store: RunStore,
        services: StageServices,
        settings: CoordinatorSettings,
        consumer: str | None = None,
        stage_runners: dict[str, Runner] | None = None,
    ) -> None:
        self.store = store
        self.services = services
        self.settings = settings
        self.consumer = consumer or consumer_name()
        self.runners = stage_runners or runners()
        self.held: dict[str, _Held] = {}  # by entry id
        self._lock = threading.Lock()
        self._stop = threading.Event()  # no more claims
        self._release = threading.Event()  # runners stop (set once claiming has stopped)
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.store.queue.ensure_group()
        for target, name in ((self._loop, "run-driver"), (self._beat, "run-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop driving: runners stop at their next check (local trainer jobs end with them),
        and the runs are handed back to the queue for another replica."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        for thread in self._threads:  # claiming ends first, so no run handed back is re-read
            thread.join(max(0.0, deadline - time.monotonic()))
        self._release.set()
        with self._lock:
            held = list(self.held.values())
        for item in held:
            item.wake.set()
        for item in held:
            if item.thread is not None:
                item.thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self, rid: str) -> None:
        """Make the runner of `rid` (if here) look at the run's state now (e.g. cancelled)."""
        with self._lock:
            for item in self.held.values():
                if item.run_id == rid:
                    item.wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._claim()
            except Exception:
                log.exception("claiming runs failed")
                self._stop.wait(1.0)

    def _claim(self) -> None:
        with self._lock:
            free = self.settings.max_concurrent_runs - len(self.held)
            driving = {item.run_id for item in self.held.values()}
        if free <= 0:
            self._stop.wait(self.settings.poll_seconds)
            return
        entries = self.store.queue.claim(
            self.consumer,
            free,
            int(self.settings.reclaim_idle_seconds * 1000),
            int(self.settings.poll_seconds * 1000),
        )
        for entry_id, fields in entries:
            rid = fields.get("run_id", "")
            if self._stop.is_set():  # claimed while stopping: straight back to the queue
                self.store.requeue(entry_id, rid)
                continue
            if not rid or rid in driving:  # no run, or one driven here already: drop it
                self.store.queue.ack([entry_id])
                continue
            item = _Held(entry_id, rid)
            item.thread = threading.Thread(
                target=self._drive, args=(item,), name=f"run-{rid}", daemon=True
            )
            with self._lock:
                self.held[entry_id] = item
            driving.add(rid)
            item.thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with self._lock:
                    ids = list(self.held)
                owned = self.store.queue.owned(self.consumer, ids)
                self.store.queue.heartbeat(self.consumer, sorted(owned))
                with self._lock:
                    for entry_id in ids:
                        if entry_id not in owned and entry_id in self.held:
                            self.held[entry_id].lost = True
                            self.held[entry_id].wake.set()
            except Exception:
                log.exception("run heartbeat failed")

    def _drive(self, item: _Held) -> None:
        finished = False
        try:
            finished = self.execute(item)
        except Exception:  # Redis unreachable or a bug: the entry is reclaimed later
            log.exception("driving a run failed", extra={"run_id": item.run_id})
        finally:
            with self._lock:
                self.held.pop(item.entry_id, None)
            try:
                if item.lost:
                    pass  # another replica drives it now
                elif finished:
                    self.store.queue.ack([item.entry_id])
                elif self._release.is_set() and self.store.state(item.run_id) not in FINAL_STATES:
                    self.store.requeue(item.entry_id, item.run_id)  # another replica, at once
            except Exception:
                log.exception("could not settle a run's entry", extra={"run_id": item.run_id})

    # ---- one run -------------------------------------------------------------------------

    def execute(self, item: _Held) -> bool:
        """Advance the run through its stages; True when it needs no more driving."""
        rid = item.run_id
        record = self.store.get(rid)
        if record is None or record.state in FINAL_STATES:
            return True
        if not self.store.start_run(rid):
            return True
        log.info("driving run", extra={"run_id": rid, "consumer": self.consumer})
        for stage in record.stages:
            if not stage.planned or stage.state == "succeeded":
                continue
            if stage.state in ("failed", "cancelled", "skipped"):
                return True
            outcome = self._run_stage(item, stage.name)
            if outcome is not None:
                return outcome
        self.store.finish_run(rid)
        log.info("run succeeded", extra={"run_id": rid})
        return True

    def _run_stage(self, item: _Held, name: str) -> bool | None:
        """Run one stage to its end: None when it succeeded (go on), else execute's answer."""
        rid = item.run_id
        while True:
            attempt = self.store.begin_stage(rid, name)
            if attempt is None:  # cancelled meanwhile
                return self.store.state(rid) in FINAL_STATES
            record = self.store.get(rid)
            assert record is not None
            ctx = self._context(item, record, name, attempt)
            try:
                self._check_inputs(ctx, record)
                result = self.runners[ctx.stage.kind](ctx, self.services)
                digests = file_digests(result.artifacts, ctx.output_dir)
                self.store.finish_stage(
                    rid, name, result.artifacts, result.metrics, digests, result.message
                )
                return None
            except StageCancelled as exc:
                # a runner that stopped its work says how ("trainer job X cancelled")
                note = str(exc) if str(exc) not in ("", RUN_CANCELLED) else "its work stopped"
                self.store.stage_stopped(rid, name, f"cancelled; {note}")
                return True
            except DriverStopping:
                return False
            except StageFailed as exc:
                message = str(exc)
            except Exception as exc:
                log.exception("stage failed", extra={"run_id": rid, "stage": name})
                message = describe(exc)
                if is_retryable(exc) and attempt <= self.settings.stage_retries:
                    self.store.progress(
                        rid, name, 0, 0, message=f"attempt {attempt} failed: {message}; retrying"
                    )
                    item.wake.wait(self.settings.stage_retry_seconds)
                    reason = self._interrupted(item, rid)
                    if reason == "cancelled":
                        self.store.stage_stopped(rid, name, "cancelled while waiting to retry")
                        return True
                    if reason is not None:
                        return False
                    continue
            self.store.fail_stage(rid, name, message)
            log.warning("run failed", extra={"run_id": rid, "stage": name, "error": message})
            return True

    def _context(self, item: _Held, record: RunRecord, name: str, attempt: int) -> StageContext:
        stage = record.stage_record(name)
        checked = {"at": 0.0}
        answer: list[str | None] = [None]

        def interrupted() -> str | None:
            now = time.monotonic()
            if item.wake.is_set() or now - checked["at"] >= STATE_POLL_SECONDS:
                item.wake.clear()
                checked["at"], answer[0] = now, self._interrupted(item, record.run_id)
            return answer[0]

        return StageContext(
            run_id=record.run_id,
            stage=PlannedStage(stage.name, stage.kind, stage.arm, stage.inputs, stage.planned),
            attempt=attempt,
            spec=RunSpec.model_validate_json(record.spec_json),
            output_dir=Path(record.output_dir),
            inputs=record.inputs,
            artifacts=record.artifacts(),
            handle=stage.handle,
            store=self.store,
            interrupted=interrupted,
            wake=item.wake,
        )

    def _interrupted(self, item: _Held, rid: str) -> str | None:
        if self.store.state(rid) == "cancelled":
            return "cancelled"
        if self._release.is_set():
            return "stopping"
        if item.lost:
            return "lost to another replica"
        return None

    def _check_inputs(self, ctx: StageContext, record: RunRecord) -> None:
        """Every input file is the one its stage recorded (sha256), so a stage never builds on
        a file changed after it was written."""
        digests = {f"input.{k}": v for k, v in record.input_digests.items()}
        for stage in record.stages:
            digests.update({f"{stage.name}.{k}": v for k, v in stage.digests.items()})
        for kind, source in ctx.stage.inputs.items():
            expected = digests.get(source)
            if expected is None:
                continue
            path = Path(ctx.input_ref(kind))
            if not path.is_file():
                raise StageFailed(f"input {source} is missing: {path}")
            if sha256_file(path) != expected:
                raise StageFailed(
                    f"input {source} ({path}) changed after it was recorded (sha256 differs)"
                )
