"""A pool of worker processes that checks answers with a hard per-item time limit.

Why processes: sympy can spin for minutes (or forever) on a hostile answer, and a thread
cannot be stopped. Each worker owns a pipe; a caller thread takes an idle worker, sends one
item and waits at most `timeout_seconds`. If no verdict came, the worker is killed (SIGKILL)
and replaced, and the item comes back `correct=False, reason="timeout"`. No signal.alarm, so
any thread may call the pool; many threads may call it at once.

Workers are forked from a forkserver that has already imported sympy and math-verify, so a
replacement is ready in milliseconds and never inherits the caller's threads (gRPC).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from astro_core.answers.config import VerifierConfig
from astro_core.answers.verify import Verdict, check, to_result
from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult

_DEFAULT_REWARDS = RewardMapping()
_PRELOAD = ["astro_core.answers.verify", "astro_core.answers.warmup"]
_MEMORY_LIMIT_BYTES = 4 * 1024**3


def _worker_main(conn: Connection, config_json: str) -> None:
    """Loop in a worker process: receive an item, send back a Verdict; None stops."""
    try:
        import resource

        # A runaway sympy computation raises MemoryError instead of exhausting the node.
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT_BYTES, _MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    config = VerifierConfig.model_validate_json(config_json)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
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

    def check_batch(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        if self._closed:
            raise RuntimeError("the verifier pool is closed")
        futures = [self._executor.submit(self._check_one, item) for item in items]
        return [f.result() for f in futures]

    def check(self, item: VerifyItem) -> Verdict:
        return self.check_batch([item])[0]

    def _check_one(self, item: VerifyItem) -> Verdict:
        worker = self._idle.get()
        try:
            worker.conn.send(item)
            if worker.conn.poll(self.config.timeout_seconds):
                verdict: Verdict = worker.conn.recv()
                if verdict.reason.startswith("error"):
                    self._count("errors")
                return verdict
            worker = self._replace(worker)
            self._count("timeouts")
            return Verdict(False, "", "timeout")
        except (EOFError, OSError, ValueError):
            worker = self._replace(worker)
            self._count("errors")
            return Verdict(False, "", "error: worker died")
        finally:
            self._idle.put(worker)

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
