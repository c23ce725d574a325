"""The Runs gRPC API: start, get, list, watch and cancel runs (the driver runs them).

StartRun validates the spec whole (INVALID_ARGUMENT naming the field), claims the run's
output folder, writes the run's inputs there, then records and queues the run in one
transaction. A repeated client_request_id returns the first run (ALREADY_EXISTS when the spec
differs) and writes nothing.

Every call answers UNAVAILABLE while Redis (the run store) is out of reach: a client may retry,
and a watch resumes after the last event it saw.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from astro_core.pipeline.spec import RunSpecError
from astro_core.pipeline.validate import RunWorld, ValidatedRun, WorldUnavailable, validate_spec
from services.coordinator.runs.convert import event_to_progress, spec_from_proto, status_to_proto
from services.coordinator.runs.store import (
    FINAL_STATES,
    EventsTrimmed,
    RunStore,
    StageRecord,
    idem_key,
)
from services.coordinator.runs.world import RunRoots, claim_and_write, release, spec_digest
from services.protos.astro.v1 import common_pb2, run_pb2, run_pb2_grpc
from services.runtime.redis_service import store_errors

RUN_ID = re.compile(r"[0-9a-f]{16}")  # fullmatch: `$` would let a trailing newline in
EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # [0-9]: \d takes any script's digits
MAX_STREAM_ID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
MAX_REQUEST_ID = 256
DEFAULT_PAGE = 20
MAX_PAGE = 100
WATCH_POLL_SECONDS = 0.25

STORE = "the coordinator's run store"  # what a lost Redis makes unavailable


class RunsServicer(run_pb2_grpc.RunsServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: RunStore,
        world: RunWorld,
        roots: RunRoots,
        default_search_preset: str = "paper",
        wake: Callable[[str], None] | None = None,
        max_unfinished: int = 1000,
    ) -> None:
        self.store = store
        self.world = world
        self.roots = roots
        self.default_search_preset = default_search_preset
        self.wake = wake or (lambda rid: None)
        self.max_unfinished = max_unfinished
        # StartRuns in progress by client_request_id: (lock, callers holding or awaiting it)
        self._starting: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def _known(self, rid: str, context: grpc.aio.ServicerContext) -> None:
        if not rid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id: is empty")
        if not RUN_ID.fullmatch(rid):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"run_id: {rid[:64]!r} is not a run id"
            )
        if not await asyncio.to_thread(self.store.exists, rid):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: no run {rid!r}")

    async def _status(self, rid: str, context: grpc.aio.ServicerContext) -> run_pb2.RunStatus:
        status = await asyncio.to_thread(self._read_status, rid)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: no run {rid!r}")
        assert status is not None
        return status

    def _read_status(self, rid: str) -> run_pb2.RunStatus | None:
        """The run's status message, built off the event loop (its config is YAML again)."""
        record = self.store.get(rid)
        return status_to_proto(record) if record is not None else None

    # ---- StartRun ------------------------------------------------------------------------

    async def StartRun(
        self, request: run_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.RunStatus:
        request_id = request.client_request_id
        if len(request_id) > MAX_REQUEST_ID:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client_request_id: longer than {MAX_REQUEST_ID} characters",
            )
        if not request.HasField("spec"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec: is required")
        unknown = unknown_field(request)
        if unknown:  # a newer client's field: running without it would not be what was asked
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{unknown} (the client is newer than this coordinator)",
            )
        async with store_errors(context, STORE):
            try:
                # Off the event loop: parsing config_yaml (up to 256 KiB of YAML) takes a while,
                # and every other call of this server would wait for it.
                spec = await asyncio.to_thread(spec_from_proto, request.spec)
                digest = spec_digest(spec.model_dump_json())
                # A retry of a start still in progress here waits for it, and is answered its run.
                async with self._one_start(request_id):
                    existing = await asyncio.to_thread(self._idempotent, request_id, digest)
                    if existing:
                        return await self._status(existing, context)
                    if await asyncio.to_thread(self.store.unfinished) >= self.max_unfinished:
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self.max_unfinished} runs are queued or running (setting "
                            "max_unfinished_runs); start this one when some have ended",
                        )
                    run = await asyncio.to_thread(
                        validate_spec, spec, self.world, self.default_search_preset
                    )
                    rid = await asyncio.to_thread(self._create, run, request_id, digest)
            except RunSpecError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except FileExistsError as exc:  # the request id's run, with another spec
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            except WorldUnavailable as exc:  # e.g. the registry cannot be asked about the model
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"base_model: {exc}")
            return await self._status(rid, context)

    @contextlib.asynccontextmanager
    async def _one_start(self, request_id: str) -> AsyncIterator[None]:
        """One StartRun at a time per client_request_id in this replica."""
        if not request_id:
            yield
            return
        lock, users = self._starting.setdefault(request_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._starting[request_id]

    def _idempotent(self, request_id: str, digest: str) -> str:
        """The run a client_request_id already started ("" if none); FileExistsError when
        it started one with another spec."""
        if not request_id:
            return ""
        raw = self.store.client.get(idem_key(request_id))
        if not raw:
            return ""
        known = json.loads(str(raw))
        if known.get("digest") != digest:
            raise FileExistsError(
                f"client_request_id: already used for run {known['run_id']} with another spec"
            )
        return str(known["run_id"])

    def _create(self, run: ValidatedRun, request_id: str, digest: str) -> str:
        rid = uuid.uuid4().hex[:16]
        out = self.roots.resolve(run.spec.output_uri, rid)
        try:
            created, inputs, input_digests = claim_and_write(self.roots, out, rid, run)
        except RunSpecError:
            # The folder may be taken by this very request, started on another replica
            # since we looked: then its run is the answer.
            existing = self._idempotent(request_id, digest)
            if existing:
                return existing
            raise
        stages = [
            StageRecord(
                name=s.name,
                kind=s.kind,
                arm=s.arm,
                planned=s.planned,
                state="pending" if s.planned else "skipped",
                inputs=s.inputs,
            )
            for s in run.stages
        ]
        try:
            found, new = self.store.create(
                rid,
                name=run.spec.name,
                spec_json=run.spec.model_dump_json(),
                output_dir=str(out),
                stages=stages,
                inputs=inputs,
                input_digests=input_digests,
                client_request_id=request_id,
                digest=digest,
            )
        except ValueError as exc:  # the same request id raced in with another spec
            release(out, created)
            raise FileExistsError(str(exc)) from exc
        except BaseException:
            release(out, created)
            raise
        if not new:  # the same request raced in first: that run is the answer
            release(out, created)
        return found

    # ---- reading -------------------------------------------------------------------------

    async def GetRun(
        self, request: run_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.RunStatus:
        async with store_errors(context, STORE):
            await self._known(request.run_id, context)
            return await self._status(request.run_id, context)

    async def ListRuns(
        self, request: run_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.ListRunsResponse:
        if request.page_size < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size: must be >= 0")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = None
        if request.page_token:
            before = decode_token(request.page_token)
            if before is None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token ListRuns gave"
                )
        async with store_errors(context, STORE):
            return await asyncio.to_thread(self._page, size, before)

    def _page(self, size: int, before: tuple[float, str] | None) -> run_pb2.ListRunsResponse:
        """One page, built off the event loop (a status message per run)."""
        found = self.store.page(size + 1, before)
        runs = [s for rid, _created in found[:size] if (s := self._read_status(rid)) is not None]
        token = encode_token(*found[size - 1]) if len(found) > size else ""
        return run_pb2.ListRunsResponse(runs=runs, next_page_token=token)

    async def WatchRun(
        self, request: run_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Progress]:
        rid, after = request.run_id, request.after_event_id
        async with store_errors(context, STORE):
            await self._known(rid, context)
            if after:
                parts = EVENT_ID.fullmatch(after)
                if not parts or any(int(p) > MAX_STREAM_ID_PART for p in parts.groups()):
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"after_event_id: {after[:64]!r} is not an event id (Progress.event_id)",
                    )
                try:
                    await asyncio.to_thread(self.store.check_after, rid, after)
                except EventsTrimmed as exc:
                    await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
                except ValueError as exc:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            last = after or "0-0"
            while True:
                try:
                    events = await asyncio.to_thread(self.store.events, rid, last, 200)
                except EventsTrimmed as exc:
                    await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
                for event in events:
                    last = event.event_id
                    yield event_to_progress(rid, event)
                    if event.stage == "" and event.state in FINAL_STATES:
                        return
                if not events:
                    # The final state and its event land together: a final run with nothing
                    # after `last` was watched to its end already (after_event_id past it).
                    if await asyncio.to_thread(self.store.state, rid) in FINAL_STATES:
                        return
                    await asyncio.sleep(WATCH_POLL_SECONDS)

    async def CancelRun(
        self, request: run_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> run_pb2.RunStatus:
        async with store_errors(context, STORE):
            await self._known(request.run_id, context)
            if await asyncio.to_thread(self.store.cancel, request.run_id):
                self.wake(request.run_id)
            return await self._status(request.run_id, context)


def unknown_field(message: Message, path: str = "") -> str:
    """Where `message` (or a message in it) holds a field this server's astro.v1 does not
    have, as `spec.base_model: unknown field number 12`; "" when nowhere."""
    numbers = sorted({f.field_number for f in UnknownFieldSet(message)})
    if numbers:
        return f"{path or 'request'}: unknown field number {numbers[0]}"
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for index, item in enumerate(value if field.is_repeated else [value]):
            at = (f"{path}." if path else "") + field.name
            found = unknown_field(item, f"{at}[{index}]" if field.is_repeated else at)
            if found:
                return found
    return ""


def encode_token(rid: str, created: float) -> str:
    raw = json.dumps({"c": created, "r": rid}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str] | None:
    """(created, run id) of a page token, or None when it is not one."""
    if len(token) > 200:
        return None
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    created, rid = data.get("c"), data.get("r")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return None
    try:
        score = float(created)
    except OverflowError:
        return None
    if not math.isfinite(score):  # JSON's NaN / Infinity: Redis refuses NaN as a score
        return None
    if not isinstance(rid, str) or not RUN_ID.fullmatch(rid):
        return None
    return score, rid
