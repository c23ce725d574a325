"""A pool of worker processes that checks answers with a hard per-item time limit.

Why processes: sympy can spin for minutes (or forever) on a hostile answer, and a thread
cannot be stopped. Each worker owns a pipe; a caller thread takes an idle worker, sends it a
chunk of items in one message, and waits at most `timeout_seconds` for each item's verdict
(the worker sends each one as soon as it is decided). If a verdict does not come, the worker
is killed (SIGKILL) and replaced, that item comes back `correct=False, reason="timeout"`, and
the rest of the chunk goes to the fresh worker. No signal.alarm, so
any thread may call the pool; many threads may call it at once.

Workers are forked from a forkserver that has already imported sympy and math-verify, so a
replacement is ready in milliseconds and never inherits the caller's threads (gRPC).
"""

from __future__ import annotations

import atexit
import multiprocessing
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from astro_core.answers.config import VerifierConfig
from astro_core.answers.parse import install_two_stage_parsing
from astro_core.answers.verify import Verdict, check, to_result
from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult

_DEFAULT_REWARDS = RewardMapping()
_PRELOAD = ["astro_core.answers.verify", "astro_core.answers.warmup"]
_MEMORY_LIMIT_BYTES = 4 * 1024**3
_MAX_CHUNK = 32
# How long a new worker may take to start (a busy machine, a heavy __main__ to re-import):
# the per-item time limit only starts once the worker says it is ready.
_STARTUP_SECONDS = 120.0
_READY = "ready"


def _worker_main(conn: Connection, config_json: str) -> None:
    """Loop in a worker process: receive (settings, items), send back one Verdict per item
    as soon as it is decided (the caller times each one); None stops."""
    try:
        import resource

        # A runaway sympy computation raises MemoryError instead of exhausting the node.
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES, _MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    install_two_stage_parsing()
    default = VerifierConfig.model_validate_json(config_json)
    settings: dict[str, VerifierConfig] = {}
    try:
        conn.send(_READY)
    except (OSError, ValueError):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        settings_json, items = message
        config = default
        if settings_json is not None:
            if settings_json not in settings:
                settings[settings_json] = VerifierConfig.model_validate_json(settings_json)
            config = settings[settings_json]
        for item in items:
            try:
                verdict = check(item, config)
            except BaseException as exc:  # noqa: BLE001 - any failure is a verdict, not a crash
                verdict = Verdict(False, "", f"error: {type(exc).__name__}: {exc}"[:300])
            try:
                conn.send(verdict)
            except (OSError, ValueError):
                return


class _Worker:
    def __init__(self, context: Any, config_json: str) -> None:
        parent, child = context.Pipe(duplex=True)
        self.conn: Connection = parent
        self.process: BaseProcess = context.Process(
            target=_worker_main, args=(child, config_json), daemon=True, name="astro-verifier"
        )
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the worker's start-up message; False if it did not come in time."""
        if not self.ready:
            if not self.conn.poll(timeout) or self.conn.recv() != _READY:
                return False
            self.ready = True
        return True

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


class VerifierPool:
    """The `Verifier` Protocol over worker processes. Close it (or use `with`) when done."""

    def __init__(self, config: VerifierConfig | None = None) -> None:
        self.config = config or VerifierConfig()
        self._config_json = self.config.model_dump_json()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        self._context = context
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.timeouts = 0
        self.errors = 0
        self.replaced = 0
        for _ in range(self.config.workers):
            self._idle.put(_Worker(context, self._config_json))
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="verifier")

    # -- the Verifier Protocol -----------------------------------------------------------

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = _DEFAULT_REWARDS
    ) -> list[VerifyResult]:
        """Results in input order; a stuck item is `reason="timeout"`, never a stall."""
        return [to_result(v, rewards) for v in self.check_batch(items)]

    # -- verdicts (reasons without rewards) ----------------------------------------------

    def check_batch(
        self, items: Sequence[VerifyItem], settings: VerifierConfig | None = None
    ) -> list[Verdict]:
        """Verdicts in input order. `settings` overrides the pool's answer settings for this
        call (fallback, set_relation_comp, strict_variables, ...); the pool keeps its own
        `workers` and `timeout_seconds`."""
        if self._closed:
            raise RuntimeError("the verifier pool is closed")
        settings_json = None if settings is None else settings.model_dump_json()
        size = self._chunk_size(len(items))
        chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
        futures = [self._executor.submit(self._check_chunk, c, settings_json) for c in chunks]
        return [verdict for f in futures for verdict in f.result()]

    def check(self, item: VerifyItem) -> Verdict:
        return self.check_batch([item])[0]

    def _chunk_size(self, n: int) -> int:
        """Items per round trip: about 4 chunks per worker for balance, at most
        _MAX_CHUNK so one slow chunk never holds back the rest for long."""
        return max(1, min(_MAX_CHUNK, -(-n // (4 * self.config.workers))))

    def _check_chunk(self, items: list[VerifyItem], settings_json: str | None) -> list[Verdict]:
        """One round trip per chunk, one time limit per item. After a timeout or a dead
        worker, the rest of the chunk goes to a fresh worker."""
        verdicts: list[Verdict] = []
        while len(verdicts) < len(items):
            pending = items[len(verdicts) :]
            worker = self._idle.get()
            try:
                if not worker.wait_ready(_STARTUP_SECONDS):
                    raise EOFError("the worker did not start")
                worker.conn.send((settings_json, pending))
                for _ in pending:
                    if not worker.conn.poll(self.config.timeout_seconds):
                        worker = self._replace(worker)
                        self._count("timeouts")
                        verdicts.append(Verdict(False, "", "timeout"))
                        break
                    verdict: Verdict = worker.conn.recv()
                    if verdict.reason.startswith("error"):
                        self._count("errors")
                    verdicts.append(verdict)
            except (EOFError, OSError, ValueError):
                worker = self._replace(worker)
                self._count("errors")
                verdicts.append(Verdict(False, "", "error: worker died"))
            finally:
                self._idle.put(worker)
        return verdicts

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        self._count("replaced")
        return _Worker(self._context, self._config_json)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def alive_workers(self) -> int:
        """Worker processes currently alive (for health checks and tests)."""
        workers = self._drain()
        alive = sum(w.process.is_alive() for w in workers)
        for w in workers:
            self._idle.put(w)
        return alive

    def _drain(self) -> list[_Worker]:
        workers = []
        for _ in range(self.config.workers):
            workers.append(self._idle.get())
        return workers

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for worker in self._drain():
            worker.stop()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Short: a comparison that runs past it only means two answers count as distinct.
SHARED_POOL_TIMEOUT_SECONDS = 1.0
_shared_pool: VerifierPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """A process-wide one-worker pool with a short time limit, started on first use and
    closed at exit: for tools that compare a few answers outside a verifier service (procedure
    cloning), where an in-process sympy call could hang on a hostile answer."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = VerifierPool(
                VerifierConfig(workers=1, timeout_seconds=SHARED_POOL_TIMEOUT_SECONDS)
            )
            atexit.register(_shared_pool.close)
        return _shared_pool
