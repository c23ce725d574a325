"""A pool of worker processes that checks answers with a hard per-item time limit.

Why processes: sympy can spin for minutes (or forever) on a hostile answer, and a thread
cannot be stopped. Workers are forked by a zygote process started from a light entry point
(`worker.py`), so they never import the caller's code, and a replacement is ready in
milliseconds. Worker start-up never counts against an item: a worker is used only after it
said "ready", and an item's time limit starts when a ready worker receives it.

Scheduling: a batch is split into chunks; one thread per worker takes the next chunk from
the active requests in turn (round robin, so a small request is not stuck behind a big one),
sends it to its worker in one message and waits at most `timeout_seconds` for each item's
verdict (the worker sends each one as soon as it is decided). If a verdict does not come,
the worker is killed and replaced, that item comes back `correct=False, reason="timeout"`,
and the rest of the chunk waits its turn again behind the other requests' chunks (a request
of stuck items would otherwise hold a worker for one time limit per item). A request whose
caller gave up (`cancel` set) is dropped: its queued chunks are never sent, and a worker busy
with one of its chunks is killed and replaced at once. No signal.alarm, so any thread may call the
pool; many threads may call it at once.
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from astro_core.answers.config import VerifierConfig
from astro_core.answers.verify import Verdict, to_result
from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult

_DEFAULT_REWARDS = RewardMapping()
_MAX_CHUNK = 32
CONTROL_PACKET_BYTES = 65536  # the largest control message (worker.py)
# Generous: the first start imports sympy and warms the parser on a possibly busy machine.
# It bounds start-up only; it is never taken from an item's time limit.
STARTUP_TIMEOUT_SECONDS = 120.0
_CANCEL_POLL_SECONDS = 0.05  # how often a thread waiting for a verdict looks at `cancel`
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding astro_core


class VerificationCancelled(Exception):
    """check_batch's caller set `cancel`: the request was dropped."""


@dataclass
class _Worker:
    pid: int
    conn: Connection


class _Zygote:
    """The parent's end of the zygote process (worker.py): spawns and kills workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        if not sys.executable:
            raise RuntimeError("cannot start verifier workers: sys.executable is not set")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # The workers import this same astro_core, whatever the working directory holds
        # (-P: no current directory on sys.path).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-P", "-m", "astro_core.answers.worker", str(theirs.fileno())]
        try:
            self.process = subprocess.Popen(
                command,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self.control = ours
        try:
            self._expect("zygote-ready", STARTUP_TIMEOUT_SECONDS)
        except BaseException:
            self.close()
            raise

    def _expect(self, kind: str, timeout: float) -> int:
        self.control.settimeout(timeout)
        try:
            data = self.control.recv(CONTROL_PACKET_BYTES)
        except TimeoutError as exc:
            raise RuntimeError(f"verifier zygote: no {kind!r} within {timeout:.0f} s") from exc
        if not data:
            code = self.process.poll()
            raise RuntimeError(f"verifier zygote exited (code {code}); see its stderr above")
        got, value = pickle.loads(data)
        if got != kind:
            raise RuntimeError(f"verifier zygote: expected {kind!r}, got {got!r}")
        return int(value)

    def spawn(self, config_json: str) -> _Worker:
        """A new worker that has said it is ready. Restarts a dead zygote once."""
        with self._lock:
            try:
                return self._spawn(config_json)
            except (OSError, RuntimeError):
                if self.process.poll() is None:
                    raise
                self.close()
                self._start()
                return self._spawn(config_json)

    def _spawn(self, config_json: str) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            message = pickle.dumps(("spawn", config_json))
            socket.send_fds(self.control, [message], [theirs.fileno()])
            pid = self._expect("spawned", STARTUP_TIMEOUT_SECONDS)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = _Worker(pid, Connection(ours.detach()))
        try:
            if not worker.conn.poll(STARTUP_TIMEOUT_SECONDS):
                raise RuntimeError(f"not ready in {STARTUP_TIMEOUT_SECONDS:.0f} s")
            message = worker.conn.recv()
            if not (isinstance(message, tuple) and message[:1] == ("ready",)):
                raise RuntimeError(f"said {message!r} instead of ready")
        except (EOFError, OSError, RuntimeError) as exc:
            self._kill(worker)
            raise RuntimeError(f"verifier worker {pid} did not start: {exc}") from exc
        return worker

    def kill(self, worker: _Worker) -> None:
        with self._lock:
            self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        worker.conn.close()
        try:
            self.control.send(pickle.dumps(("kill", worker.pid)))
            self._expect("killed", STARTUP_TIMEOUT_SECONDS)
        except (OSError, RuntimeError):
            pass  # a dead zygote took its workers with it

    def close(self) -> None:
        """Closing the control socket makes the zygote kill its workers and exit."""
        self.control.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(eq=False)  # compared and hashed by identity
class _Request:
    chunks: deque[tuple[int, list[VerifyItem]]]  # (offset into the results, items)
    settings_json: str | None
    cancel: threading.Event  # the caller's: set when it gives up
    results: list[Verdict | None]
    running: int = 0  # chunks being checked now
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    halted: bool = False  # the pool closed, or a chunk failed

    def stopped(self) -> bool:
        return self.halted or self.cancel.is_set()


class VerifierPool:
    """The `Verifier` Protocol over worker processes. Close it (or use `with`) when done."""

    def __init__(self, config: VerifierConfig | None = None) -> None:
        self.config = config or VerifierConfig()
        self._config_json = self.config.model_dump_json()
        self._lock = threading.Condition()
        self._queue: deque[_Request] = deque()  # requests with chunks not yet taken
        self._active: set[_Request] = set()  # requests not yet done
        self._closed = False
        self.timeouts = 0
        self.errors = 0
        self.replaced = 0
        self.cancelled = 0
        self._zygote = _Zygote()
        try:
            self._workers = [
                self._zygote.spawn(self._config_json) for _ in range(self.config.workers)
            ]
        except BaseException:
            self._zygote.close()
            raise
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"verifier-{i}", daemon=True)
            for i in range(self.config.workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the Verifier Protocol -----------------------------------------------------------

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = _DEFAULT_REWARDS
    ) -> list[VerifyResult]:
        """Results in input order; a stuck item is `reason="timeout"`, never a stall."""
        if not (math.isfinite(rewards.correct) and math.isfinite(rewards.incorrect)):
            raise ValueError(f"rewards must be finite numbers, got {rewards}")
        return [to_result(v, rewards) for v in self.check_batch(items)]

    # -- verdicts (reasons without rewards) ----------------------------------------------

    def check_batch(
        self,
        items: Sequence[VerifyItem],
        settings: VerifierConfig | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> list[Verdict]:
        """Verdicts in input order. `settings` overrides the pool's answer settings for this
        call (fallback, set_relation_comp, strict_variables, ...); the pool keeps its own
        `workers` and `timeout_seconds`. Setting `cancel` (from any thread) drops the
        request: nothing more of it is checked, and this raises VerificationCancelled."""
        if not items:
            return []
        size = self._chunk_size(len(items))
        request = _Request(
            chunks=deque((i, list(items[i : i + size])) for i in range(0, len(items), size)),
            settings_json=None if settings is None else settings.model_dump_json(),
            cancel=cancel or threading.Event(),
            results=[None] * len(items),
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the verifier pool is closed")
            self._queue.append(request)
            self._active.add(request)
            self._lock.notify_all()
        while not request.done.wait(_CANCEL_POLL_SECONDS):
            if request.stopped():
                self._drop(request)
        if request.error is not None:
            raise request.error
        verdicts = [v for v in request.results if v is not None]
        if len(verdicts) < len(items):
            if request.halted:
                raise RuntimeError("the verifier pool was closed during the call")
            raise VerificationCancelled("the verification was cancelled")
        return verdicts

    def check(self, item: VerifyItem) -> Verdict:
        return self.check_batch([item])[0]

    def _chunk_size(self, n: int) -> int:
        """Items per round trip: about 4 chunks per worker for balance, at most
        _MAX_CHUNK so one slow chunk never holds back the rest for long."""
        return max(1, min(_MAX_CHUNK, -(-n // (4 * self.config.workers))))

    # -- scheduling ------------------------------------------------------------------------

    def _drop(self, request: _Request) -> None:
        """Forget a stopped request's queued chunks; done once no chunk is running."""
        with self._lock:
            request.chunks.clear()
            if request in self._queue:
                self._queue.remove(request)
            if request.running == 0:
                self._finish(request)

    def _finish(self, request: _Request) -> None:
        """Called with the lock held, once no chunk of `request` is queued or running."""
        if request.done.is_set():
            return
        if request.stopped() and request.error is None:
            self.cancelled += 1
        self._active.discard(request)
        request.done.set()

    def _next_chunk(self) -> tuple[_Request, int, list[VerifyItem]] | None:
        """The next chunk, taking requests in turn; None when the pool closes."""
        with self._lock:
            while True:
                if self._closed:
                    return None
                while self._queue:
                    request = self._queue.popleft()
                    if request.stopped() or not request.chunks:
                        continue
                    offset, items = request.chunks.popleft()
                    if request.chunks:
                        self._queue.append(request)  # round robin between requests
                    request.running += 1
                    return request, offset, items
                self._lock.wait()

    def _serve(self, index: int) -> None:
        """One thread per worker: check chunks until the pool closes."""
        while True:
            taken = self._next_chunk()
            if taken is None:
                return
            request, offset, items = taken
            verdicts: list[Verdict] = []
            try:
                verdicts = self._check_chunk(index, items, request)
                request.results[offset : offset + len(verdicts)] = verdicts
            except BaseException as exc:  # noqa: BLE001 - reported to the caller, not lost
                request.error = exc
                request.halted = True
            with self._lock:
                request.running -= 1
                rest = items[len(verdicts) :]
                if rest and not request.stopped():  # after a timeout: back in line
                    request.chunks.appendleft((offset + len(verdicts), rest))
                    if request not in self._queue:
                        self._queue.append(request)
                    self._lock.notify()
                elif request.running == 0 and (not request.chunks or request.stopped()):
                    self._finish(request)

    def _check_chunk(self, index: int, items: list[VerifyItem], request: _Request) -> list[Verdict]:
        """One round trip per chunk, one time limit per item. The verdicts of the chunk's
        first items: all of them, or up to a timeout (the caller queues the rest again) or
        a cancel. After a dead worker the rest of the chunk goes to a fresh worker.

        A worker that dies on an item gets one more try with a fresh worker (it may have
        died before it took the item: killed while idle); dying again is the item's verdict.
        """
        verdicts: list[Verdict] = []
        died_on = -1  # the index of the item a worker last died on
        while len(verdicts) < len(items) and not request.stopped():
            pending = items[len(verdicts) :]
            worker = self._workers[index]
            try:
                worker.conn.send((request.settings_json, pending))
                for _ in pending:
                    outcome = self._await_verdict(worker, request)
                    if outcome == "cancelled":
                        self._replace(index)  # busy with abandoned items
                        return verdicts
                    if outcome == "timeout":
                        self._replace(index)
                        self._count("timeouts")
                        verdicts.append(Verdict(False, "", "timeout"))
                        return verdicts
                    verdict: Verdict = worker.conn.recv()
                    if verdict.reason.startswith("error"):
                        self._count("errors")
                    verdicts.append(verdict)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                self._replace(index)
                if died_on != len(verdicts):
                    died_on = len(verdicts)  # try this item once more
                    continue
                self._count("errors")
                verdicts.append(Verdict(False, "", "error: worker died"))
        return verdicts

    def _await_verdict(self, worker: _Worker, request: _Request) -> str:
        """ "ready" when a verdict can be read, else "timeout" or "cancelled"."""
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            if request.stopped():
                return "cancelled"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if worker.conn.poll(min(left, _CANCEL_POLL_SECONDS)):
                return "ready"

    def _replace(self, index: int) -> None:
        self._zygote.kill(self._workers[index])
        if not self._closed:
            self._count("replaced")
            self._workers[index] = self._zygote.spawn(self._config_json)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def alive_workers(self) -> int:
        """Worker processes currently alive (for health checks and tests)."""
        return sum(_is_alive(w.pid) for w in list(self._workers))

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def zygote_pid(self) -> int:
        """The process that forks the workers (worker.py)."""
        return int(self._zygote.process.pid)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for request in self._active:
                request.halted = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
            worker.conn.close()
        self._zygote.close()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_alive(pid: int) -> bool:
    """Running, and not a zombie (a dead worker stays one until the zygote reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True  # no /proc here: os.kill found the process
    return state != "Z"


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
