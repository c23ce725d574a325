"""First-party test harness: run any service in-process on loopback from synchronous code.

    with ServiceThread("verifier", register) as svc:
        stub = VerifierStub(sync_channel(svc.client_config()))

The service runs in its own asyncio loop on a background thread, with the same runtime
(auth, metrics, health, graceful stop) as `astro serve`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from services.runtime.config import ClientConfig, ServiceConfig
from services.runtime.server import Register, ServiceRuntime

T = TypeVar("T")


class ServiceThread:
    def __init__(self, name: str, register: Register, config: ServiceConfig | None = None) -> None:
        self.config = config or ServiceConfig(port=0, metrics_port=0)
        self.runtime = ServiceRuntime(name, self.config)
        self._register = register
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"svc-{name}", daemon=True
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run a coroutine on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ServiceThread:
        self._thread.start()
        try:
            self.run(self.runtime.start(self._register))
        except BaseException:  # the runtime stopped what it started; end the loop too
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            raise
        return self

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.runtime.port}"

    def client_config(self, **fields: Any) -> ClientConfig:
        return ClientConfig(address=self.address, **fields)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.run(self.runtime.stop(), timeout=self.config.grace_seconds + 30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
