"""Client helpers: channels with a default deadline, bearer token, TLS, message limits and
retry-with-backoff on UNAVAILABLE (gRPC's own retry policy, set through the service config)."""

from __future__ import annotations

import json
import random
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from services.runtime.config import ClientConfig

T = TypeVar("T")


def _service_config(config: ClientConfig) -> str:
    retry_policy = {
        "maxAttempts": config.retry_attempts,
        "initialBackoff": f"{config.initial_backoff_seconds}s",
        "maxBackoff": f"{config.max_backoff_seconds}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    method_config: dict[str, Any] = {"name": [{}]}  # every method of every service
    if config.retry_attempts >= 2:  # gRPC rejects a policy with fewer than 2 attempts
        method_config["retryPolicy"] = retry_policy
    return json.dumps({"methodConfig": [method_config]})


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(config)),
    ]


def _extra_metadata(config: ClientConfig) -> tuple[tuple[str, str], ...]:
    token = config.auth.resolve_token()
    return (("authorization", f"Bearer {token}"),) if token else ()


def _merge(metadata: Any, extra: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    return [*(metadata or ()), *extra]


class _SyncDetails(
    namedtuple("_SyncDetails", "method timeout metadata credentials wait_for_ready compression"),
    grpc.ClientCallDetails,
):
    pass


class _SyncDefaults(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token and a default deadline to every call of a sync channel."""

    def __init__(self, timeout: float, metadata: Sequence[tuple[str, str]]) -> None:
        self._timeout = timeout
        self._metadata = metadata

    def _details(self, d: Any) -> _SyncDetails:
        return _SyncDetails(
            d.method,
            d.timeout if d.timeout is not None else self._timeout,
            _merge(d.metadata, self._metadata),
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_defaults(timeout: float, metadata: Sequence[tuple[str, str]]) -> list[Any]:
    """The same defaults for grpc.aio channels (one interceptor class per call kind)."""

    def details(d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            d.method,
            d.timeout if d.timeout is not None else timeout,
            grpc.aio.Metadata(*_merge(d.metadata, metadata)),
            d.credentials,
            d.wait_for_ready,
        )

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, d: Any, request: Any) -> Any:
            return await continuation(details(d), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, d: Any, request: Any) -> Any:
            return await continuation(details(d), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation: Any, d: Any, requests: Any) -> Any:
            return await continuation(details(d), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation: Any, d: Any, requests: Any) -> Any:
            return await continuation(details(d), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def _credentials(config: ClientConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=config.tls.read("ca_file"))


def sync_channel(config: ClientConfig, *, default_timeout: float | None = None) -> grpc.Channel:
    """A blocking channel. `default_timeout` None uses config.timeout_seconds; streams that
    run long (Watch*) should pass a timeout per call instead."""
    options = channel_options(config)
    if config.tls.enabled:
        channel = grpc.secure_channel(config.address, _credentials(config), options=options)
    else:
        channel = grpc.insecure_channel(config.address, options=options)
    timeout = config.timeout_seconds if default_timeout is None else default_timeout
    return grpc.intercept_channel(channel, _SyncDefaults(timeout, _extra_metadata(config)))


def aio_channel(config: ClientConfig, *, default_timeout: float | None = None) -> grpc.aio.Channel:
    """An asyncio channel with the same defaults as sync_channel."""
    options = channel_options(config)
    timeout = config.timeout_seconds if default_timeout is None else default_timeout
    interceptors = _aio_defaults(timeout, _extra_metadata(config))
    if config.tls.enabled:
        return grpc.aio.secure_channel(
            config.address, _credentials(config), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(config.address, options=options, interceptors=interceptors)


def retry_unavailable(
    call: Callable[[], T],
    *,
    attempts: int = 5,
    initial_backoff: float = 0.2,
    max_backoff: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `call()` again with jittered exponential backoff while it fails UNAVAILABLE.

    Channels already retry single calls; this is for what their policy cannot cover, such as
    re-opening a server stream after the server restarted.
    """
    backoff = initial_backoff
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                raise
            sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, max_backoff)
    raise AssertionError("unreachable")
