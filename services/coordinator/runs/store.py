"""Run records in Redis: the run, one record per stage, an event log, the index, the queue.

Keys (all under `astro:run:`, the pipeline's prefix):

    {rid}                 hash    run_id, name, state, stage, message, created_unix,
                                  updated_unix, finished_unix, output_dir, spec (RunSpec JSON),
                                  inputs + input_digests (JSON: the run's own input files),
                                  stage_names (JSON), client_request_id, events_total
    {rid}:stage:{name}    hash    name, kind, arm, planned, state, attempts, done, total,
                                  inputs, artifacts, digests, metrics, handle (JSON each),
                                  message, started_unix, finished_unix
    {rid}:events          stream  one entry per event {event: JSON}, capped at events_maxlen
    {rid}:train           stream  the trainer's TrainProgress events (services/trainer)
    idem:{request id}     string  {"run_id", "digest"}: StartRun's idempotency key
    index                 zset    run id by creation time (ListRuns, newest first)
    queue                 stream  one entry {run_id} per run to drive; consumer group
                                  `drivers` hands runs to coordinator replicas

Every change of state is one MULTI/EXEC under WATCH of the records it reads (redis-py's
`transaction`): a transition happens only from the states it allows, and its event is
appended in the same transaction, so the log never disagrees with the records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from services.coordinator.streams import WorkQueue

PREFIX = "astro:run:"
QUEUE = PREFIX + "queue"
GROUP = "drivers"
INDEX = PREFIX + "index"
RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")
STAGE_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")
EVENTS_MAXLEN = 10_000

_JSON_FIELDS = ("inputs", "artifacts", "digests", "metrics", "handle")


def run_key(rid: str, part: str = "") -> str:
    return f"{PREFIX}{rid}" + (f":{part}" if part else "")


def stage_key(rid: str, name: str) -> str:
    return run_key(rid, f"stage:{name}")


def idem_key(client_request_id: str) -> str:
    return f"{PREFIX}idem:{client_request_id}"


@dataclass
class StageRecord:
    name: str
    kind: str
    arm: str = ""
    planned: bool = True
    state: str = "pending"
    attempts: int = 0
    done: int = 0
    total: int = 0
    inputs: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    handle: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    started_unix: float = 0.0
    finished_unix: float = 0.0

    def to_redis(self) -> dict[str, str]:
        data: dict[str, str] = {}
        for key, value in self.__dict__.items():
            if key in _JSON_FIELDS:
                data[key] = json.dumps(value)
            elif isinstance(value, bool):
                data[key] = "1" if value else "0"
            else:
                data[key] = str(value) if not isinstance(value, float) else repr(value)
        return data

    @classmethod
    def from_redis(cls, raw: Mapping[str, str]) -> StageRecord:
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            arm=raw.get("arm", ""),
            planned=raw.get("planned", "1") == "1",
            state=raw.get("state", "pending"),
            attempts=int(raw.get("attempts", 0)),
            done=int(raw.get("done", 0)),
            total=int(raw.get("total", 0)),
            inputs=json.loads(raw.get("inputs") or "{}"),
            artifacts=json.loads(raw.get("artifacts") or "{}"),
            digests=json.loads(raw.get("digests") or "{}"),
            metrics=json.loads(raw.get("metrics") or "{}"),
            handle=json.loads(raw.get("handle") or "{}"),
            message=raw.get("message", ""),
            started_unix=float(raw.get("started_unix") or 0.0),
            finished_unix=float(raw.get("finished_unix") or 0.0),
        )


@dataclass
class RunRecord:
    run_id: str
    name: str
    state: str
    stage: str
    message: str
    created_unix: float
    updated_unix: float
    finished_unix: float
    output_dir: str
    spec_json: str
    client_request_id: str
    stages: list[StageRecord]
    inputs: dict[str, str] = field(default_factory=dict)
    input_digests: dict[str, str] = field(default_factory=dict)

    def artifacts(self) -> dict[str, str]:
        """Every artifact recorded so far, keyed `<stage>.<kind>`."""
        return {f"{s.name}.{k}": v for s in self.stages for k, v in s.artifacts.items()}

    def stage_record(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(f"run {self.run_id} has no stage {name!r}")


@dataclass(frozen=True)
class Event:
    """One entry of a run's event log."""

    event_id: str
    stage: str  # "" for the run itself
    state: str
    done: int = 0
    total: int = 0
    message: str = ""
    elapsed_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


class EventsTrimmed(LookupError):
    """Events after the given id were dropped from the capped log."""


class RunStore:
    """Runs on one Redis (decode_responses=True)."""

    def __init__(self, client: redis.Redis, events_maxlen: int = EVENTS_MAXLEN) -> None:
        self.client = client
        self.events_maxlen = events_maxlen
        self.queue = WorkQueue(client, QUEUE, GROUP)

    # ---- creation ------------------------------------------------------------------------

    def create(
        self,
        rid: str,
        *,
        name: str,
        spec_json: str,
        output_dir: str,
        stages: Sequence[StageRecord],
        inputs: Mapping[str, str] | None = None,
        input_digests: Mapping[str, str] | None = None,
        client_request_id: str = "",
        digest: str = "",
    ) -> tuple[str, bool]:
        """Record a run and queue it, all at once. Returns (run id, created now); a
        client_request_id already used returns that run (ValueError when its spec differed)."""
        now = time.time()
        record = {
            "run_id": rid,
            "name": name,
            "state": "pending",
            "stage": "",
            "message": "",
            "created_unix": repr(now),
            "updated_unix": repr(now),
            "finished_unix": "",
            "output_dir": output_dir,
            "spec": spec_json,
            "client_request_id": client_request_id,
            "events_total": "1",
            "stage_names": json.dumps([s.name for s in stages]),
            "inputs": json.dumps(dict(inputs or {})),
            "input_digests": json.dumps(dict(input_digests or {})),
        }
        event = _event_json("", "pending", message="run created")
        keys = [idem_key(client_request_id)] if client_request_id else []
        result: list[tuple[str, bool]] = []

        def create(pipe: Any) -> None:
            result.clear()
            if client_request_id:
                existing = pipe.get(keys[0])
                if existing:
                    known = json.loads(existing)
                    if known.get("digest") != digest:
                        raise ValueError(
                            f"client_request_id: already used for run {known['run_id']} with "
                            "a different spec"
                        )
                    result.append((str(known["run_id"]), False))
                    return
            pipe.multi()
            if client_request_id:
                pipe.set(keys[0], json.dumps({"run_id": rid, "digest": digest}))
            pipe.hset(run_key(rid), mapping=record)
            for stage in stages:
                pipe.hset(stage_key(rid, stage.name), mapping=stage.to_redis())
            pipe.zadd(INDEX, {rid: now})
            pipe.xadd(run_key(rid, "events"), {"event": event})
            pipe.xadd(QUEUE, {"run_id": rid})
            result.append((rid, True))

        self.queue.ensure_group()
        self.client.transaction(create, *keys)
        return result[0]

    # ---- reading -------------------------------------------------------------------------

    def unfinished(self) -> int:
        """Runs queued or being driven (their queue entries are removed when they end)."""
        return int(self.client.xlen(QUEUE))  # type: ignore[arg-type]

    def exists(self, rid: str) -> bool:
        return bool(self.client.exists(run_key(rid)))

    def state(self, rid: str) -> str | None:
        value = self.client.hget(run_key(rid), "state")
        return str(value) if value is not None else None

    def get(self, rid: str) -> RunRecord | None:
        raw: dict[str, str] = self.client.hgetall(run_key(rid))  # type: ignore[assignment]
        if not raw:
            return None
        names = json.loads(raw.get("stage_names") or "[]")
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(stage_key(rid, name))
        stages = [StageRecord.from_redis(r) for r in pipe.execute() if r]
        return RunRecord(
            run_id=raw["run_id"],
            name=raw.get("name", ""),
            state=raw["state"],
            stage=raw.get("stage", ""),
            message=raw.get("message", ""),
            created_unix=float(raw["created_unix"]),
            updated_unix=float(raw.get("updated_unix") or raw["created_unix"]),
            finished_unix=float(raw.get("finished_unix") or 0.0),
            output_dir=raw.get("output_dir", ""),
            spec_json=raw["spec"],
            client_request_id=raw.get("client_request_id", ""),
            stages=stages,
            inputs=json.loads(raw.get("inputs") or "{}"),
            input_digests=json.loads(raw.get("input_digests") or "{}"),
        )

    def stage(self, rid: str, name: str) -> StageRecord | None:
        raw: dict[str, str] = self.client.hgetall(stage_key(rid, name))  # type: ignore[assignment]
        return StageRecord.from_redis(raw) if raw else None

    def page(self, size: int, before: tuple[float, str] | None) -> list[tuple[str, float]]:
        """Up to `size` (run id, created) newest first, strictly older than `before` (created,
        run id), ties broken by run id."""
        if before is None:
            found: Any = self.client.zrevrangebyscore(
                INDEX, "+inf", "-inf", start=0, num=size, withscores=True
            )
            return [(str(r), float(s)) for r, s in found]
        score, rid = before
        same: Any = self.client.zrangebyscore(INDEX, score, score)
        ties = sorted((str(r) for r in same if str(r) < rid), reverse=True)[:size]
        result = [(r, score) for r in ties]
        if len(result) < size:
            older: Any = self.client.zrevrangebyscore(
                INDEX, f"({score!r}", "-inf", start=0, num=size - len(result), withscores=True
            )
            result += [(str(r), float(s)) for r, s in older]
        return result

    # ---- events --------------------------------------------------------------------------

    def events(
        self, rid: str, after: str, count: int = 100, block_ms: int | None = None
    ) -> list[Event]:
        """Events after `after` ("" or "0-0": from the start), waiting up to block_ms for one.
        EventsTrimmed when events after `after` were dropped from the capped log."""
        key = run_key(rid, "events")
        start = after or "0-0"
        if start != "0-0":
            self._check_not_trimmed(rid, key, start)
        reply: Any = self.client.xread({key: start}, count=count, block=block_ms)
        events = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(_event_from_json(str(entry_id), fields.get("event", "{}")))
        return events

    def check_after(self, rid: str, after: str) -> None:
        """Refuse a watch resumption point that is not one of this run's events: ValueError
        for an id the run's log never held (another run's, one from the future),
        EventsTrimmed for one dropped from the capped log. "" and "0-0" mean the start."""
        if not after or after == "0-0":
            return
        key = run_key(rid, "events")
        self._check_not_trimmed(rid, key, after)
        found: Any = self.client.xrange(key, after, after, count=1)
        if not found:
            raise ValueError(
                f"after_event_id: {after} is not an event of run {rid} (give the "
                "Progress.event_id of an event this run's WatchRun sent)"
            )

    def _check_not_trimmed(self, rid: str, key: str, after: str) -> None:
        total = int(self.client.hget(run_key(rid), "events_total") or 0)  # type: ignore[arg-type]
        if total <= int(self.client.xlen(key)):  # type: ignore[arg-type]
            return  # nothing was ever dropped
        first: Any = self.client.xrange(key, "-", "+", count=1)
        if first and _id_tuple(after) < _id_tuple(str(first[0][0])):
            raise EventsTrimmed(
                f"after_event_id: events after {after} were dropped from the log (it keeps "
                f"the last {self.events_maxlen}); watch from the beginning, or GetRun"
            )

    def requeue(self, entry_id: str, rid: str) -> None:
        """Hand a run back to the queue at once (a replica stopping gracefully), instead of
        letting it sit idle until another replica reclaims it."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(QUEUE, GROUP, entry_id)
        pipe.xdel(QUEUE, entry_id)
        pipe.xadd(QUEUE, {"run_id": rid})
        pipe.execute()

    def last_event_id(self, rid: str) -> str:
        last: Any = self.client.xrevrange(run_key(rid, "events"), "+", "-", count=1)
        return str(last[0][0]) if last else "0-0"

    # ---- transitions ---------------------------------------------------------------------

    def _change(
        self,
        rid: str,
        stage: str | None,
        decide: Callable[[dict[str, str], dict[str, str]], list[tuple[str, dict[str, str], str]]],
    ) -> bool:
        """One conditional transition: `decide(run, stage)` reads the records as they are and
        returns the updates [(key, fields, event JSON or "")]; nothing when the transition
        does not apply. All updates and their events land in one transaction."""
        keys = [run_key(rid)] + ([stage_key(rid, stage)] if stage else [])
        changed: list[bool] = []

        def apply(pipe: Any) -> None:
            changed.clear()
            run = pipe.hgetall(keys[0])
            current = pipe.hgetall(keys[1]) if stage else {}
            if not run or (stage and not current):
                return
            updates = decide(run, current)
            if not updates:
                return
            pipe.multi()
            now = repr(time.time())
            for key, fields, event in updates:
                pipe.hset(key, mapping=fields)
                if event:
                    pipe.hincrby(keys[0], "events_total", 1)
                    pipe.xadd(
                        run_key(rid, "events"),
                        {"event": event},
                        maxlen=self.events_maxlen,
                        approximate=True,
                    )
            pipe.hset(keys[0], "updated_unix", now)
            changed.append(True)

        self.client.transaction(apply, *keys)
        return bool(changed)

    def start_run(self, rid: str) -> bool:
        """pending -> running (a driver took it); True also when it was running already."""

        def decide(run: dict[str, str], _: dict[str, str]) -> list[Any]:
            if run["state"] != "pending":
                return []
            return [(run_key(rid), {"state": "running"}, _event_json("", "running"))]

        self._change(rid, None, decide)
        return self.state(rid) == "running"

    def begin_stage(self, rid: str, name: str) -> int | None:
        """Start (or start again) a stage of a running run: its attempt number, or None when
        the run is not running or the stage already ended."""
        attempt: list[int] = []

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            attempt.clear()
            if run["state"] != "running" or stage["state"] not in ("pending", "running"):
                return []
            number = int(stage.get("attempts", 0)) + 1
            attempt.append(number)
            note = "started" if number == 1 else f"started again (attempt {number})"
            fields = {
                "state": "running",
                "attempts": str(number),
                "message": "",
                "started_unix": repr(time.time()),
            }
            event = _event_json(
                name, "running", int(stage.get("done", 0)), int(stage.get("total", 0)), note
            )
            return [(stage_key(rid, name), fields, event), (run_key(rid), {"stage": name}, "")]

        return attempt[0] if self._change(rid, name, decide) else None

    def progress(
        self,
        rid: str,
        name: str,
        done: int,
        total: int,
        metrics: Mapping[str, float] | None = None,
        message: str = "",
        elapsed: float = 0.0,
    ) -> bool:
        """Record a running stage's progress and log it as an event."""

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            if stage["state"] != "running":
                return []
            merged = {**json.loads(stage.get("metrics") or "{}"), **dict(metrics or {})}
            fields = {"done": str(done), "total": str(total), "metrics": json.dumps(merged)}
            event = _event_json(name, "running", done, total, message, elapsed, metrics)
            return [(stage_key(rid, name), fields, event)]

        return self._change(rid, name, decide)

    def set_handle(self, rid: str, name: str, handle: Mapping[str, Any]) -> None:
        """What runs the stage now (a search id, a trainer job), for a resume to find."""
        self.client.hset(stage_key(rid, name), "handle", json.dumps(dict(handle)))

    def finish_stage(
        self,
        rid: str,
        name: str,
        artifacts: Mapping[str, str],
        metrics: Mapping[str, float],
        digests: Mapping[str, str],
        message: str = "",
    ) -> bool:
        """Record a running stage's artifacts and mark it succeeded. The artifacts are kept
        even when the run was cancelled meanwhile (the stage's work is done)."""

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            if stage["state"] not in ("running", "cancelled") or run["state"] == "failed":
                return []
            merged = {**json.loads(stage.get("metrics") or "{}"), **dict(metrics)}
            fields = {
                "state": "succeeded",
                "artifacts": json.dumps(dict(artifacts)),
                "digests": json.dumps(dict(digests)),
                "metrics": json.dumps(merged),
                "message": message,
                "finished_unix": repr(time.time()),
            }
            done = int(stage.get("total", 0)) or int(stage.get("done", 0))
            event = _event_json(name, "succeeded", done, done, message, metrics=merged)
            return [(stage_key(rid, name), {**fields, "done": str(done)}, event)]

        return self._change(rid, name, decide)

    def fail_stage(self, rid: str, name: str, message: str) -> bool:
        """A stage failed: it and the run are marked failed with its message."""

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            if run["state"] in FINAL_STATES or stage["state"] != "running":
                return []
            now = repr(time.time())
            text = f"{name}: {message}"
            stage_event = _event_json(
                name, "failed", int(stage.get("done", 0)), int(stage.get("total", 0)), message
            )
            return [
                (
                    stage_key(rid, name),
                    {"state": "failed", "message": message, "finished_unix": now},
                    stage_event,
                ),
                (
                    run_key(rid),
                    {"state": "failed", "message": text, "finished_unix": now},
                    _event_json("", "failed", message=text),
                ),
            ]

        return self._change(rid, name, decide)

    def stage_stopped(self, rid: str, name: str, message: str) -> bool:
        """The stage's work stopped because its run was cancelled: the stage is marked
        cancelled (if CancelRun did not get to it) with how it stopped (e.g. its process)."""

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            if run["state"] != "cancelled" or stage["state"] not in ("running", "cancelled"):
                return []
            fields = {"state": "cancelled", "message": message}
            if not stage.get("finished_unix"):
                fields["finished_unix"] = repr(time.time())
            event = _event_json(name, "cancelled", message=message)
            return [(stage_key(rid, name), fields, event)]

        return self._change(rid, name, decide)

    def finish_run(self, rid: str) -> bool:
        """running -> succeeded, once every stage is done."""

        def decide(run: dict[str, str], _: dict[str, str]) -> list[Any]:
            if run["state"] != "running":
                return []
            fields = {"state": "succeeded", "finished_unix": repr(time.time())}
            return [(run_key(rid), fields, _event_json("", "succeeded", message="run succeeded"))]

        return self._change(rid, None, decide)

    def cancel(self, rid: str) -> bool:
        """pending/running -> cancelled; the running stage (if any) is marked cancelled too.
        Whoever drives the run sees it and stops that stage's work."""
        record = self.get(rid)
        if record is None or record.state in FINAL_STATES:
            return False
        running = [s.name for s in record.stages if s.state == "running"]

        def decide(run: dict[str, str], stage: dict[str, str]) -> list[Any]:
            if run["state"] in FINAL_STATES:
                return []
            now = repr(time.time())
            updates: list[Any] = []
            if stage and stage.get("state") == "running":
                fields = {"state": "cancelled", "message": "cancelled", "finished_unix": now}
                updates.append(
                    (stage_key(rid, stage["name"]), fields, _event_json(stage["name"], "cancelled"))
                )
            run_fields = {"state": "cancelled", "message": "cancelled", "finished_unix": now}
            updates.append(
                (run_key(rid), run_fields, _event_json("", "cancelled", message="cancelled"))
            )
            return updates

        return self._change(rid, running[0] if running else None, decide)


def _event_json(
    stage: str,
    state: str,
    done: int = 0,
    total: int = 0,
    message: str = "",
    elapsed: float = 0.0,
    metrics: Mapping[str, float] | None = None,
) -> str:
    return json.dumps(
        {
            "stage": stage,
            "state": state,
            "done": done,
            "total": total,
            "message": message,
            "elapsed": elapsed,
            "metrics": dict(metrics or {}),
            "time": time.time(),
        }
    )


def _event_from_json(event_id: str, raw: str) -> Event:
    data = json.loads(raw)
    return Event(
        event_id=event_id,
        stage=str(data.get("stage", "")),
        state=str(data.get("state", "")),
        done=int(data.get("done", 0)),
        total=int(data.get("total", 0)),
        message=str(data.get("message", "")),
        elapsed_seconds=float(data.get("elapsed", 0.0)),
        metrics={str(k): float(v) for k, v in dict(data.get("metrics") or {}).items()},
    )


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
