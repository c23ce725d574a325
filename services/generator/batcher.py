"""Continuous batching: concurrent Generate calls decode together, joining and leaving
between decode steps.

Calls wait in a bounded queue. When the engine is idle, the first call waits up to
`max_wait_ms` for others to join it (their prompts are then prefilled together), and the
engine thread starts a running batch (`Engine.start_batch`). Between two decode steps the
engine thread admits queued calls while fewer than `max_batch_size` sequences decode, and
hands every finished call its completions at once; the event loop (health, new calls) never
blocks. A full queue refuses new calls (`QueueFull`, mapped to RESOURCE_EXHAUSTED) instead of
growing without bound.

A call whose caller gave up (deadline passed, RPC cancelled) is abandoned: if it is still
queued it is dropped before it reaches the engine; if it is decoding, its sequences leave
the batch at the next step (its cancel event is checked every step), so the engine is free
for the next call within one step.

The engine can be swapped while calls are in flight (`swap`): the running batch stops
admitting, finishes on the engine it started with, and every result names the version that
produced it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from astro_core.engines import Engine, GenerationRequest, InvalidRequest
from astro_core.engines.base import RunningBatch, Ticket
from astro_core.protocols import Completion

log = logging.getLogger("astro.generator")

Result = tuple[list[Completion], str]


class QueueFull(Exception):
    """The queue holds max_queue calls already."""


class BatcherClosed(Exception):
    """The service is stopping."""


@dataclass(eq=False)
class _Call:
    request: GenerationRequest
    enqueued: float
    future: asyncio.Future[Result]
    # Token ids of the prompts and the engine whose tokenizer made them (re-encoded if the
    # call reaches another engine after a swap).
    prompt_ids: Sequence[Sequence[int]] | None = None
    encoded_by: Engine | None = None
    # Set when the caller gives up (deadline, cancel): the engine drops the call's rows.
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def abandoned(self) -> bool:
        return self.cancel.is_set()

    @property
    def rows(self) -> int:
        return len(self.request.prompts) * self.request.params.n


@dataclass
class BatchStats:
    """What the batcher has done, for tests and metrics."""

    batches: int = 0  # running batches started (one per busy period of the engine)
    steps: int = 0  # decode steps
    calls: int = 0  # calls that reached the engine
    largest_batch_calls: int = 0  # most calls decoding together
    dropped_calls: int = 0  # abandoned while queued: never reached the engine
    cancelled_calls: int = 0  # abandoned while decoding: left the batch at the next step


class Batcher:
    def __init__(
        self,
        engine: Engine | None = None,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        # Appended on the event loop, taken on the engine thread.
        self._pending: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._engine_ready = asyncio.Event()
        if engine is not None:
            self._engine_ready.set()
        # Held while a running batch decodes; a swap takes it to wait for that batch.
        self._running = asyncio.Lock()
        self._draining = False  # a draining swap waits: the running batch admits no more
        self._closed = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="generator-engine")
        self._task: asyncio.Task[None] | None = None
        self._driving: Future[None] | None = None  # the running batch's thread work

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="generator-batcher")

    @property
    def busy(self) -> bool:
        """Whether a batch is running on the engine now."""
        return self._running.locked()

    @property
    def queued(self) -> int:
        with self._lock:
            return sum(not c.abandoned for c in self._pending)

    async def submit(
        self,
        request: GenerationRequest,
        timeout: float | None = None,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        encoded_by: Engine | None = None,
    ) -> Result:
        """Queue a request; returns its completions and the model version that made them.

        Raises QueueFull at once when the queue is full, TimeoutError when `timeout`
        passes first. Whenever this returns without a result (timeout, cancellation) the
        call is abandoned: dropped if queued, stopped at the next step if decoding.
        """
        if self._task is None or self._closed:
            raise BatcherClosed("the generator is not running")
        loop = asyncio.get_running_loop()
        call = _Call(request, loop.time(), loop.create_future(), prompt_ids, encoded_by)
        with self._lock:
            if len(self._pending) >= self.max_queue:  # abandoned calls hold memory too
                live = deque(c for c in self._pending if not c.abandoned)
                self.stats.dropped_calls += len(self._pending) - len(live)
                self._pending = live
            if len(self._pending) >= self.max_queue:
                raise QueueFull(
                    f"generator queue is full ({self.max_queue} requests waiting); retry later"
                )
            self._pending.append(call)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(call.future), timeout)
        finally:
            if not call.future.done():
                call.cancel.set()

    async def wait_for_engine(self, timeout: float | None = None) -> Engine:
        """The current engine, waiting for the first one to load (or a draining swap)."""
        async with asyncio.timeout(timeout):
            while self.engine is None:
                await self._engine_ready.wait()
        return self.engine

    def set_engine(self, engine: Engine) -> None:
        self.engine = engine
        self._engine_ready.set()

    async def swap(self, load: Callable[[], Engine], *, drain: bool) -> Engine:
        """Load a new engine with `load` (in a thread) and serve it from the next batch on.

        drain=False keeps decoding on the old engine while the new one loads (memory for
        both; the CPU and hf default). drain=True stops admitting calls, waits for the
        running batch, frees the old engine, then loads (one model in GPU memory at a time,
        as vLLM needs); queued calls wait meanwhile and are served by the new engine. If
        that load fails the old model is gone: the caller reloads it (see
        server.GeneratorService.load).
        """
        loop = asyncio.get_running_loop()
        if drain:
            self._draining = True
            try:
                async with self._running:
                    old, self.engine = self.engine, None
                    self._engine_ready.clear()
                    if old is not None:
                        await loop.run_in_executor(self._executor, old.close)
                    new = await loop.run_in_executor(self._executor, load)
                    self.set_engine(new)
                    return new
            finally:
                self._draining = False
        new = await asyncio.to_thread(load)
        old = self.engine
        self.set_engine(new)  # the running batch (on `old`) admits no more calls
        if old is not None:
            async with self._running:  # a batch that started on `old` has finished now
                await loop.run_in_executor(self._executor, old.close)
        return new

    async def close(self) -> None:
        self._closed = True  # a running batch stops at its next step
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._driving is not None:  # it ends at its next step; the engine is closed next
            await asyncio.gather(
                asyncio.wait_for(asyncio.wrap_future(self._driving), 30), return_exceptions=True
            )
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        for call in pending:
            call.cancel.set()
            if not call.future.done():
                call.future.set_exception(BatcherClosed("the generator is stopping"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the event loop side -----------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._engine_ready.wait()
            await self._gather()
            async with self._running:
                engine = self.engine
                if engine is None:  # a draining swap failed; the calls wait for the next one
                    continue
                self.stats.batches += 1
                self._driving = self._executor.submit(self._drive, engine, loop)
                await asyncio.wrap_future(self._driving)

    async def _gather(self) -> None:
        """Wait for a call, then (coalescing) for more until the batch is full or the oldest
        has waited max_wait."""
        while not self._has_pending():
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                live = [c for c in self._pending if not c.abandoned]
            if not live or sum(c.rows for c in live) >= self.max_batch_size:
                return
            remaining = live[0].enqueued + self.max_wait - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _has_pending(self) -> bool:
        with self._lock:
            self._drop_abandoned()
            return bool(self._pending)

    def _drop_abandoned(self) -> None:
        """Drop abandoned calls from the front of the queue (call with the lock held)."""
        while self._pending and self._pending[0].abandoned:
            self._pending.popleft()
            self.stats.dropped_calls += 1

    # -- the engine thread -------------------------------------------------------------------

    def _drive(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        """Decode until no admitted call is left, admitting queued calls between steps."""
        batch = engine.start_batch(self.max_batch_size)
        live: dict[int, tuple[Ticket, _Call]] = {}
        try:
            while not self._closed:
                self._admit(engine, batch, live, loop)
                if not live:
                    return
                finished = batch.step()
                self.stats.steps += 1
                for ticket in finished:
                    _, call = live.pop(id(ticket))
                    if ticket.cancelled:
                        self.stats.cancelled_calls += 1
                    else:
                        _settle(loop, call, (ticket.results(), engine.model_version))
            for _, call in live.values():
                _settle(loop, call, BatcherClosed("the generator is stopping"))
        except Exception as exc:
            log.exception("engine batch failed")
            for _, call in live.values():
                _settle(loop, call, exc)

    def _admit(
        self,
        engine: Engine,
        batch: RunningBatch,
        live: dict[int, tuple[Ticket, _Call]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        while batch.rows < batch.capacity and self.engine is engine and not self._draining:
            with self._lock:
                self._drop_abandoned()
                if not self._pending:
                    break
                call = self._pending.popleft()
            ids = call.prompt_ids if call.encoded_by is engine else None
            try:  # re-encoded (and re-checked) only if another engine encoded it
                ticket = batch.add(call.request, prompt_ids=ids, cancel=call.cancel)
            except InvalidRequest as exc:
                _settle(loop, call, exc)
                continue
            self.stats.calls += 1
            if ticket.remaining:
                live[id(ticket)] = (ticket, call)
            else:
                _settle(loop, call, ([], engine.model_version))
        self.stats.largest_batch_calls = max(self.stats.largest_batch_calls, len(live))


def _settle(loop: asyncio.AbstractEventLoop, call: _Call, outcome: Result | BaseException) -> None:
    """Resolve a call's future from the engine thread (nothing if the caller left)."""

    def resolve() -> None:
        if call.future.done():
            return
        if isinstance(outcome, BaseException):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
