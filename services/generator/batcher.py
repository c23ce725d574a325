"""Dynamic batching: concurrent Generate calls become one engine batch.

Calls wait in a bounded queue. A batch is formed when the queued sequences (prompts x n)
reach `max_batch_size` or the oldest call has waited `max_wait_ms`, and runs on one engine
thread, so the event loop (health, new calls) never blocks. While a batch decodes, new calls
queue up and form the next one. A full queue refuses new calls (`QueueFull`, mapped to
RESOURCE_EXHAUSTED) instead of growing without bound; a call whose deadline passes while it
waits is dropped before it reaches the engine.

The engine can be swapped while calls are in flight (`swap`): a running batch finishes on the
engine it started with, and every result names the version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from astro_core.engines import Engine, GenerationRequest, InvalidRequest
from astro_core.protocols import Completion

log = logging.getLogger("astro.generator")


class QueueFull(Exception):
    """The queue holds max_queue calls already."""


class BatcherClosed(Exception):
    """The service is stopping."""


@dataclass(eq=False)
class _Call:
    request: GenerationRequest
    enqueued: float
    future: asyncio.Future[tuple[list[Completion], str]]
    abandoned: bool = False  # the caller gave up (deadline, cancel): skip it

    @property
    def rows(self) -> int:
        return len(self.request.prompts) * self.request.params.n


@dataclass
class BatchStats:
    """What the batcher has done, for tests and metrics."""

    batches: int = 0
    calls: int = 0
    largest_batch_calls: int = 0


class Batcher:
    def __init__(
        self,
        engine: Engine | None = None,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 10.0,
        max_queue: int = 256,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._pending: deque[_Call] = deque()
        self._wakeup = asyncio.Event()
        self._engine_ready = asyncio.Event()
        if engine is not None:
            self._engine_ready.set()
        # Held while a batch runs; a draining swap takes it to wait for the running batch.
        self._running = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="generator-engine")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="generator-batcher")

    @property
    def busy(self) -> bool:
        """Whether a batch is running on the engine now."""
        return self._running.locked()

    @property
    def queued(self) -> int:
        return sum(not c.abandoned for c in self._pending)

    async def submit(
        self, request: GenerationRequest, timeout: float | None = None
    ) -> tuple[list[Completion], str]:
        """Queue a request; returns its samples and the model version that produced them.

        Raises QueueFull at once when the queue is full, TimeoutError when `timeout`
        passes first (the request is then dropped if it has not started).
        """
        if self._task is None:
            raise BatcherClosed("the generator is not running")
        if self.queued >= self.max_queue:
            raise QueueFull(
                f"generator queue is full ({self.max_queue} requests waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        call = _Call(request, loop.time(), loop.create_future())
        self._pending.append(call)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(call.future), timeout)
        finally:
            if not call.future.done():
                call.abandoned = True

    async def wait_for_engine(self, timeout: float | None = None) -> Engine:
        """The current engine, waiting for the first one to load."""
        await asyncio.wait_for(self._engine_ready.wait(), timeout)
        assert self.engine is not None
        return self.engine

    def set_engine(self, engine: Engine) -> None:
        self.engine = engine
        self._engine_ready.set()

    async def swap(self, load: Callable[[], Engine], *, drain: bool) -> Engine:
        """Load a new engine with `load` (in a thread) and serve it from the next batch on.

        drain=False keeps decoding on the old engine while the new one loads (memory for
        both; the CPU and hf default). drain=True waits for the running batch, frees the old
        engine, then loads (one model in GPU memory at a time, as vLLM needs); queued calls
        wait meanwhile and are served by the new engine. If that load fails the old model is
        gone: the caller reloads it (see server.GeneratorService.load).
        """
        loop = asyncio.get_running_loop()
        if drain:
            async with self._running:
                old, self.engine = self.engine, None
                self._engine_ready.clear()
                if old is not None:
                    await loop.run_in_executor(self._executor, old.close)
                new = await loop.run_in_executor(self._executor, load)
                self.set_engine(new)
                return new
        new = await asyncio.to_thread(load)
        old = self.engine
        self.set_engine(new)
        if old is not None:
            async with self._running:  # a batch that started on `old` has finished now
                await loop.run_in_executor(self._executor, old.close)
        return new

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for call in self._pending:
            if not call.future.done():
                call.future.set_exception(BatcherClosed("the generator is stopping"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while True:
            await self._engine_ready.wait()
            batch = await self._next_batch()
            if not batch:
                continue
            async with self._running:
                engine = self.engine
                if engine is None:  # a draining swap failed; keep the calls for the next one
                    self._pending.extendleft(reversed(batch))
                    continue
                await self._run(engine, batch)

    async def _next_batch(self) -> list[_Call]:
        while not self._drop_abandoned():
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        # Coalesce: wait for more calls until the batch is full or the oldest waited enough.
        while self._drop_abandoned() and self._queued_rows() < self.max_batch_size:
            remaining = self._pending[0].enqueued + self.max_wait - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        batch: list[_Call] = []
        rows = 0
        while self._drop_abandoned():
            call = self._pending[0]
            if batch and rows + call.rows > self.max_batch_size:
                break
            batch.append(self._pending.popleft())
            rows += call.rows
        return batch

    def _drop_abandoned(self) -> bool:
        """Drop abandoned calls from the front; whether any call is left."""
        while self._pending and self._pending[0].abandoned:
            self._pending.popleft()
        return bool(self._pending)

    def _queued_rows(self) -> int:
        return sum(c.rows for c in self._pending if not c.abandoned)

    async def _run(self, engine: Engine, batch: list[_Call]) -> None:
        loop = asyncio.get_running_loop()
        requests = [c.request for c in batch]
        try:
            results = await loop.run_in_executor(self._executor, engine.generate_batch, requests)
        except InvalidRequest as exc:
            # Calls are checked on arrival, so only a swap to a smaller model gets here: run
            # each call alone so that one bad request does not fail the others.
            if len(batch) > 1:
                for call in batch:
                    await self._run(engine, [call])
            elif not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        except Exception as exc:
            log.exception("engine batch failed")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.calls += len(batch)
        self.stats.largest_batch_calls = max(self.stats.largest_batch_calls, len(batch))
        for call, samples in zip(batch, results, strict=True):
            if not call.future.done():
                call.future.set_result((samples, engine.model_version))
