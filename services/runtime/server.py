"""The one gRPC server runtime every service runs in.

It owns what each service would otherwise rewrite: a grpc.aio server with message-size
limits, optional TLS and bearer-token auth, standard health checking (grpc.health.v1),
server reflection, Prometheus `/metrics`, JSON logs, and a graceful stop on SIGTERM/SIGINT
(health goes NOT_SERVING, new calls are refused, in-flight calls get `grace_seconds`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.runtime.config import ServiceConfig
from services.runtime.interceptors import (
    AuthInterceptor,
    InternalErrorInterceptor,
    MetricsInterceptor,
    ServiceMetrics,
)

log = logging.getLogger("astro.runtime")

# A service module provides `register(runtime) -> [full service names]`, adding its servicers
# to runtime.server; it may add cleanup callbacks with runtime.on_shutdown.
Register = Callable[["ServiceRuntime"], Awaitable[Sequence[str]] | Sequence[str]]


class ServiceStartError(RuntimeError):
    """A service could not start (e.g. its port is taken); the message says which and why."""


def server_options(config: ServiceConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def _check_can_listen(name: str, host: str, port: int) -> None:
    """Raise ServiceStartError saying why `host:port` cannot be bound (gRPC only says that
    it failed, in a log line of its own)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(sockaddr)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ServiceStartError(f"{name}: cannot listen on {host}:{port}: {reason}") from None


class ServiceRuntime:
    """Runs one service: `await runtime.start(register)`, then `await runtime.wait()`."""

    def __init__(self, name: str, config: ServiceConfig) -> None:
        self.name = name
        self.config = config
        self.metrics = ServiceMetrics(name)
        self.health = health.aio.HealthServicer()
        self.port: int = 0
        self.metrics_port: int | None = None
        self.server: grpc.aio.Server | None = None
        self._service_names: list[str] = []
        self._held: set[str] = set()  # services that report NOT_SERVING until released
        self._shutdown_callbacks: list[Callable[[], Awaitable[None] | None]] = []
        self._stopped = asyncio.Event()
        self._metrics_http: Any = None
        self._serving = False  # the server started (a failed start stops without logging it)

    def hold_serving(self, service: str) -> None:
        """Report `service` NOT_SERVING from the start until `set_serving(service, True)`;
        for services that get ready after the process is up (e.g. loading a model)."""
        self._held.add(service)

    async def set_serving(self, service: str, serving: bool) -> None:
        if serving:
            self._held.discard(service)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if self.server is not None:
            await self.health.set(service, status)

    def on_shutdown(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run callback (sync or async) after the server stopped, in reverse order of adding."""
        self._shutdown_callbacks.append(callback)

    async def start(self, register: Register) -> None:
        """Bind the ports, add the service (`register`), start serving. If any step fails,
        what earlier steps started is stopped (shutdown callbacks included) before raising."""
        try:
            await self._start(register)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, register: Register) -> None:
        token = self.config.auth.resolve_token()
        interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if token:
            interceptors.append(AuthInterceptor(token))
        interceptors.append(InternalErrorInterceptor())
        self.server = grpc.aio.server(
            interceptors=interceptors, options=server_options(self.config)
        )
        # Ports first: a busy port fails before the service loads anything.
        address = f"{self.config.host}:{self.config.port}"
        _check_can_listen(self.name, self.config.host, self.config.port)
        try:
            if self.config.tls.enabled:
                creds = grpc.ssl_server_credentials(
                    [(self.config.tls.read("key_file"), self.config.tls.read("cert_file"))]
                )
                self.port = self.server.add_secure_port(address, creds)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc: "Failed to bind to address ..."
            raise ServiceStartError(f"{self.name}: cannot listen on {address}") from None
        if self.port == 0:
            raise ServiceStartError(f"{self.name}: cannot listen on {address}")
        if self.config.metrics_port is not None:
            try:
                self._metrics_http, _ = start_http_server(
                    self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
                )
            except OSError as exc:
                raise ServiceStartError(
                    f"{self.name}: cannot serve metrics on "
                    f"{self.config.host}:{self.config.metrics_port}: {exc.strerror or exc}"
                ) from None
            self.metrics_port = int(self._metrics_http.server_port)
        names = register(self)
        if not isinstance(names, Sequence):
            names = await names
        self._service_names = list(names)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        await self.server.start()
        self._serving = True
        for service in ["", *self._service_names]:
            await self.set_serving(service, service not in self._held)
        self._write_ready_file()
        log.info(
            "serving",
            extra={"port": self.port, "metrics_port": self.metrics_port, "auth": bool(token)},
        )

    def _write_ready_file(self) -> None:
        if not self.config.ready_file:
            return
        info = {
            "service": self.name,
            "pid": os.getpid(),
            "address": f"{self.config.host}:{self.port}",
            "port": self.port,
            "metrics_port": self.metrics_port,
        }
        path = Path(self.config.ready_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)  # readers never see half a file

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        """Block until a stop is requested, then stop gracefully."""
        await self._stopped.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop gracefully, then run the shutdown callbacks (each even if one fails)."""
        if self.server is None:
            return
        if self._serving:
            log.info("stopping", extra={"grace_seconds": self.config.grace_seconds})
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace_seconds)
        callbacks, self._shutdown_callbacks = self._shutdown_callbacks, []
        for callback in reversed(callbacks):
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:
                log.exception("a shutdown step failed")
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        self.server = None
        if self._serving:
            log.info("stopped")
        self._serving = False


async def run_service(name: str, register: Register, config: ServiceConfig) -> None:
    """Start a service, serve until SIGTERM/SIGINT, then stop gracefully."""
    runtime = ServiceRuntime(name, config)
    await runtime.start(register)
    runtime.install_signal_handlers()
    await runtime.wait()
