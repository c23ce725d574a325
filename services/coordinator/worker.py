"""A coordinator replica's search loop: claim tasks, search their trees together, finish them.

Each round the worker tops up its active trees from the task stream (stale tasks of dead
replicas first), drops trees it no longer owns or whose search ended, advances the trees of
each search with one batched MCTS round, and finishes trees that ran all their iterations:
problem marked done once (atomically), task acknowledged. A heartbeat thread keeps the
tasks it holds from looking idle while a long round runs.

Failures end searches instead of looping: an error that retrying cannot fix (an unknown
model, a refused credential, a bad request) fails the search at once with its message; a
transient one (the generator unreachable, a timeout) is retried a bounded number of times,
then fails the search. Either way the other searches of the replica go on. A round that
lost its trees to another replica (TreeConflict: this one stalled past the reclaim time) or
lost Redis is dropped without counting against the search.

A search that ends (CancelSearch, or failed elsewhere) while its round waits on the generator
frees the worker within about a second: a watcher thread sees the search's state change and
sets its `ended` event, which cuts the in-flight Generate call short (GeneratorClient cancels
the call, and the generator stops that work). A generator whose `generate` takes no `cancel`
keyword runs its call to the end.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis

from astro_core.prompts import ChatTemplate
from astro_core.protocols import Completion, Generator, Verifier
from astro_core.search.mcts import MCTS, TreeSearch
from astro_core.search.store import TreeConflict
from services.coordinator.jobs import JobStore, Task, tree_key
from services.coordinator.settings import CoordinatorSettings
from services.runtime.config import ClientConfig

log = logging.getLogger("astro.coordinator.worker")

# How often the states of the searches being advanced are read, to cut an ended one short.
ENDED_POLL_SECONDS = 0.5

MAX_FAILURES = 3  # rounds of one search that may fail in a row (transient errors) before it fails

# gRPC codes that retrying may cure; any other code is the request's or the setup's fault.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again later may succeed: transient gRPC codes and unexpected errors,
    not NOT_FOUND / INVALID_ARGUMENT / UNAUTHENTICATED / PERMISSION_DENIED / ... nor a request
    the engine refuses (InvalidRequest) or a bad config (ValueError)."""
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code in RETRYABLE_CODES
    return not isinstance(exc, ValueError)


def describe(exc: BaseException) -> str:
    """One line for a search's message: `CODE: details` for gRPC errors."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        details = exc.details() if callable(getattr(exc, "details", None)) else ""
        return f"{exc.code().name}: {details}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Backends:
    """What the search talks to: a generator, a verifier, and the policy's chat template."""

    generator: Generator
    verifier: Verifier
    template: Callable[[], ChatTemplate]
    close: Callable[[], None] = lambda: None
    # Make the generator serve a search's model (a StartSearch ModelRef as a dict).
    load_model: Callable[[dict[str, Any]], None] | None = None


def load_backends_factory(spec: str) -> Callable[[CoordinatorSettings], Backends]:
    module_name, _, attr = spec.partition(":")
    factory: Callable[[CoordinatorSettings], Backends] = getattr(
        importlib.import_module(module_name), attr
    )
    return factory


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SearchEnded(Exception):
    """A round cut short because its search ended (cancelled) while it ran."""


class EndableGenerator:
    """A search's view of the backends' generator: once `ended` is set, its calls stop (an
    in-flight one too, when the generator's `generate` takes a `cancel` event)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.ended = threading.Event()
        try:
            self.cancellable = "cancel" in inspect.signature(generator.generate).parameters
        except (TypeError, ValueError):
            self.cancellable = False

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[Completion]:
        if self.ended.is_set():
            raise SearchEnded("the search ended")
        if self.cancellable:
            kwargs["cancel"] = self.ended
        try:
            return self.generator.generate(prompts, **kwargs)
        except Exception as exc:
            if self.ended.is_set():
                raise SearchEnded("the search ended while its generator call ran") from exc
            raise


@dataclass
class _Active:
    task: Task
    tree: TreeSearch


@dataclass
class SearchWorker:
    jobs: JobStore
    backends: Backends
    settings: CoordinatorSettings
    consumer: str = field(default_factory=consumer_name)

    def __post_init__(self) -> None:
        self.active: dict[str, _Active] = {}
        self.drivers: dict[str, MCTS] = {}
        self.generators: dict[str, EndableGenerator] = {}
        self.failures: dict[str, int] = {}
        self.loaded_model: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for target, name in (
            (self._loop, "search-worker"),
            (self._beat, "search-heartbeat"),
            (self._watch_ended, "search-ended-watch"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current round; held tasks stay pending and are reclaimed later."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep serving; tasks not acknowledged are retried
                log.exception("search round failed")
                self._stop.wait(1.0)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with self._lock:
                    held = list(self.active)
                self.jobs.heartbeat(self.consumer, sorted(self.jobs.owned(self.consumer, held)))
            except Exception:
                log.exception("heartbeat failed")

    def _watch_ended(self) -> None:
        """Set the `ended` event of each search being advanced that is no longer running."""
        while not self._stop.wait(ENDED_POLL_SECONDS):
            try:
                with self._lock:
                    watched = dict(self.generators)
                for sid, generator in watched.items():
                    if not generator.ended.is_set() and self.jobs.state(sid) != "running":
                        generator.ended.set()
            except Exception:
                log.exception("reading search states failed")

    # ---- one round -----------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, search one round, finish. Returns the number of trees advanced."""
        self._claim()
        if not self.active:
            return 0
        self._drop_lost_and_ended()
        by_search: dict[str, list[_Active]] = {}
        for item in self.active.values():
            by_search.setdefault(item.task.search_id, []).append(item)
        advanced = 0
        for sid, items in by_search.items():
            driver = self.drivers[sid]
            before = driver.counters.generator_calls
            try:
                driver.step([i.tree for i in items])
            except (TreeConflict, redis.ConnectionError, redis.TimeoutError) as exc:
                # Not the search's fault: another replica took its trees over while this one
                # stalled, or this replica lost Redis. The trees are forgotten (reloaded
                # when their tasks are next claimed) and the search is not failed for it.
                log.warning(
                    "search round dropped", extra={"search_id": sid, "error": describe(exc)}
                )
                self._drop(sid, items)
                continue
            except SearchEnded:
                log.info("search round cut short: the search ended", extra={"search_id": sid})
                self.jobs.ack([i.task.entry_id for i in items])
                self._drop(sid, items)
                continue
            except Exception as exc:
                self._round_failed(sid, items, exc)
                continue
            self.failures.pop(sid, None)
            self.jobs.add_generator_calls(sid, driver.counters.generator_calls - before)
            advanced += len(items)
            for item in items:
                if driver.is_done(item.tree):
                    self._finish(driver, item)
        for sid in [s for s in self.drivers if s not in by_search]:
            del self.drivers[sid]
            with self._lock:
                self.generators.pop(sid, None)
        return advanced

    def _claim(self) -> None:
        free = self.settings.max_active_trees - len(self.active)
        block = None if self.active else int(self.settings.poll_seconds * 1000)
        reclaim_ms = int(self.settings.reclaim_idle_seconds * 1000)
        failed_now: set[str] = set()  # searches whose setup failed in this claim
        tasks = self.jobs.claim(self.consumer, free, reclaim_ms, block)
        # One state read per search and one acknowledgement per claim: a cancelled search of
        # 100k problems leaves 100k tasks ahead of the next search's, to be drained fast.
        states = {sid: self.jobs.state(sid) for sid in {t.search_id for t in tasks}}
        stale = [t.entry_id for t in tasks if states[t.search_id] != "running"]
        if stale:
            self.jobs.ack(stale)
        for task in tasks:
            if task.entry_id in self.active or states[task.search_id] != "running":
                continue
            if self.jobs.is_done(task.search_id, task.index):
                self.jobs.ack([task.entry_id])
                continue
            if task.search_id in failed_now:
                continue  # left pending: reclaimed, or acknowledged once the search ended
            try:
                driver = self._driver(task.search_id)
                problem = self.jobs.problem(task.search_id, task.index)
                tree = driver.open_tree(problem, tree_key(task.search_id, task.index))
            except Exception as exc:
                failed_now.add(task.search_id)
                self._setup_failed(task, exc)
                continue
            with self._lock:
                self.active[task.entry_id] = _Active(task, tree)

    def _setup_failed(self, task: Task, exc: Exception) -> None:
        """A search that cannot start fails now, or after `setup_retries` transient errors
        (each retry waits for the task to be reclaimed: reclaim_idle_seconds)."""
        sid, reason = task.search_id, describe(exc)
        if is_retryable(exc):
            tries = self.jobs.count_setup_failure(sid)
            if tries <= self.settings.setup_retries:
                log.warning(
                    "search setup failed; will retry",
                    extra={"search_id": sid, "error": reason, "tries": tries},
                )
                return  # the task stays pending and is reclaimed after reclaim_idle_seconds
            message = f"search setup failed {tries} times: {reason}"
        else:
            message = f"search setup failed: {reason}"
        log.error("search failed", extra={"search_id": sid, "error": message})
        self.jobs.end(sid, "failed", message)
        self.jobs.ack([task.entry_id])

    def _driver(self, sid: str) -> MCTS:
        if sid not in self.drivers:
            model = self.jobs.model(sid)
            if any(model.values()) and self.backends.load_model is not None:
                # One policy per generator at a time: the search's model is loaded first.
                if model != self.loaded_model:
                    self.backends.load_model(model)
                    self.loaded_model = model
            generator = EndableGenerator(self.backends.generator)
            with self._lock:
                self.generators[sid] = generator
            self.drivers[sid] = MCTS(
                generator,
                self.backends.verifier,
                self.jobs.trees,
                self.jobs.config(sid),
                self.backends.template(),
            )
        return self.drivers[sid]

    def _drop_lost_and_ended(self) -> None:
        owned = self.jobs.owned(self.consumer, list(self.active))
        states = {
            sid: self.jobs.state(sid) for sid in {a.task.search_id for a in self.active.values()}
        }
        for entry_id, item in list(self.active.items()):
            if entry_id not in owned:  # another replica took it over: it is theirs now
                self._forget(entry_id)
            elif states[item.task.search_id] != "running":
                self.jobs.ack([entry_id])
                self._forget(entry_id)

    def _finish(self, driver: MCTS, item: _Active) -> None:
        tree = driver.finish(item.tree)
        first = self.jobs.finish_problem(
            item.task.search_id, item.task.index, tree.stats["solved"], self.consumer
        )
        if not first:
            log.warning("problem already finished", extra={"task": item.task.entry_id})
        self.jobs.ack([item.task.entry_id])
        self._forget(item.task.entry_id)

    def _round_failed(self, sid: str, items: list[_Active], exc: Exception) -> None:
        """Forget the trees (their memory may be ahead of Redis); their tasks go idle and
        are reclaimed from the stored trees. An error retrying cannot cure fails the search
        at once; transient ones do after MAX_FAILURES rounds in a row."""
        reason = describe(exc)
        log.error("search round failed", extra={"search_id": sid, "error": reason})
        self._drop(sid, items)
        self.failures[sid] = self.failures.get(sid, 0) + 1
        if not is_retryable(exc):
            message = f"search round failed: {reason}"
        elif self.failures[sid] >= MAX_FAILURES:
            message = f"search round failed {MAX_FAILURES} times: {reason}"
        else:
            return
        self.jobs.end(sid, "failed", message)
        self.jobs.ack([i.task.entry_id for i in items])
        self.failures.pop(sid)

    def _drop(self, sid: str, items: list[_Active]) -> None:
        """Forget a search's trees and driver (their memory may be ahead of Redis, or behind
        it); their tasks go idle and are reclaimed from the stored trees."""
        for item in items:
            self._forget(item.task.entry_id)
        self.drivers.pop(sid, None)
        with self._lock:
            self.generators.pop(sid, None)

    def _forget(self, entry_id: str) -> None:
        with self._lock:
            self.active.pop(entry_id, None)


def grpc_backends(
    settings: CoordinatorSettings, client_config: Callable[[str], ClientConfig] | None = None
) -> Backends:
    """The generator and verifier services, through their gRPC clients. `client_config`
    gives a peer's ClientConfig (the service's own: ServiceConfig.client_config)."""
    from services.generator.client import GeneratorClient
    from services.runtime.config import client_config_from_env
    from services.verifier.client import VerifierClient

    peer = client_config or client_config_from_env
    timeout = settings.generate_timeout_seconds
    generator = GeneratorClient(peer(settings.generator_address), timeout=timeout)
    verifier = VerifierClient(peer(settings.verifier_address), timeout_seconds=timeout)

    def load_model(ref: dict[str, Any]) -> None:
        generator.load_model(
            ref.get("path", ""),
            name=ref.get("name", ""),
            version=int(ref.get("version", 0)),
            alias=ref.get("alias", ""),
        )

    def close() -> None:
        generator.close()
        verifier.close()

    return Backends(generator, verifier, generator.chat_template, close, load_model)
