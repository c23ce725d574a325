"""Following a registry alias: when it moves, the generator hot-loads the version it names.

The trainer registers a checkpoint, which moves `latest` (and any alias it names, such as
`sft`); a generator started with `follow_alias` sees the move on WatchCheckpoints and swaps to
that version exactly as LoadModel does, so calls in flight finish on the old weights.

The watch is a blocking gRPC stream, so it runs on its own thread and hands each load to the
service's event loop. The watch reconnects by itself when the registry restarts; any other
failure is logged and the watch reopened after a pause, so following never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

from astro_core.checkpoints import CheckpointEvent, CheckpointInfo
from astro_core.engines import ModelSource

log = logging.getLogger("astro.generator")

RETRY_SECONDS = 2.0


class Watchable(Protocol):
    """What following needs of a registry: RegistryClient has both."""

    def get(self, name: str, version: int = 0, alias: str = "") -> CheckpointInfo: ...

    def watch(self, name: str = "", after_event_id: str = "", resume: bool = True) -> Any: ...


LoadVersion = Callable[[ModelSource], Coroutine[Any, Any, object]]


class AliasFollower:
    """Loads `name`'s version under `alias` now, then again every time the alias moves."""

    def __init__(
        self,
        registry: Watchable,
        name: str,
        alias: str,
        load: LoadVersion,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.registry = registry
        self.name = name
        self.alias = alias
        self._load = load
        self._loop = loop
        self._stopped = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="generator-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for event in self._events():
                    if event.kind == "alias" and event.alias == self.alias:
                        self._load_version(event.checkpoint.version)
            except Exception as exc:  # noqa: BLE001 - following must outlive any failure
                if self._stopped.is_set():
                    return
                log.warning("following %s@%s: %s; retrying", self.name, self.alias, exc)
                self._stopped.wait(RETRY_SECONDS)

    def _events(self) -> Iterator[CheckpointEvent]:
        """Open the watch first, then catch up on where the alias points now, so a move that
        happened before the watch was live is not missed."""
        self._watch = self.registry.watch(name=self.name)
        try:
            if self._stopped.is_set():
                return
            current = self.registry.get(self.name, alias=self.alias)
            self._load_version(current.version)
            yield from self._watch
        finally:
            self._watch.close()

    def _load_version(self, version: int) -> None:
        if self._stopped.is_set():
            return
        source = ModelSource(name=self.name, version=version)
        future = asyncio.run_coroutine_threadsafe(self._load(source), self._loop)
        future.result()  # a no-op when that version is served already
        log.info("following %s@%s: serving %s", self.name, self.alias, source.describe())
