"""Server interceptors shared by every service: bearer-token auth, Prometheus metrics, and
INTERNAL (with a message) for exceptions a handler did not turn into a status, status
messages clipped to a length every client accepts, and INVALID_ARGUMENT for request bytes
that are not the method's message."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("astro.runtime")

# Kubernetes gRPC probes carry no token, so health stays open; it reveals nothing else.
UNAUTHENTICATED_METHODS_PREFIX = "/grpc.health.v1.Health/"
# The metrics label of calls to methods the server does not have (any name a caller sends
# would otherwise become a label of its own).
UNKNOWN_METHOD_LABEL = "<unknown>"

_Handler = Any  # grpc.RpcMethodHandler; grpc ships no type information
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _handler_kind(handler: Any) -> str:
    for kind in _KINDS:
        if getattr(handler, kind) is not None:
            return kind
    raise ValueError("method handler has no behaviour")


def _replace_behavior(handler: Any, kind: str, behavior: Callable[..., Any]) -> Any:
    return handler._replace(**{kind: behavior})  # RpcMethodHandler is a namedtuple


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `authorization` metadata is not `Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(UNAUTHENTICATED_METHODS_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        supplied = metadata.get("authorization", "")
        supplied_bytes = supplied.encode() if isinstance(supplied, str) else bytes(supplied)
        if hmac.compare_digest(supplied_bytes, self._expected):
            return handler
        reason = "missing bearer token" if not supplied else "invalid bearer token"
        if handler is None:
            # Without a token a caller learns nothing, not even which methods exist.
            return _UNKNOWN_METHOD[reason]
        return _rejecting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, reason)


def _unknown_method_handler(reason: str) -> Any:
    """A handler answering UNAUTHENTICATED for a method the server does not have. Streaming
    both ways, so it answers any kind of call at once without waiting for a request."""

    async def reject(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    return grpc.stream_stream_rpc_method_handler(reject)


_UNKNOWN_METHOD = {
    reason: _unknown_method_handler(reason)
    for reason in ("missing bearer token", "invalid bearer token")
}


def _is_unknown_method(handler: Any) -> bool:
    return any(handler is known for known in _UNKNOWN_METHOD.values())


def _rejecting_handler(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    kind = _handler_kind(handler)

    async def reject(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def reject_stream(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    return _replace_behavior(handler, kind, reject_stream if kind.endswith("stream") else reject)


class ServiceMetrics:
    """Prometheus collectors of one service, in a registry of its own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "astro_grpc_requests",
            "gRPC calls finished, by method and status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "astro_grpc_errors",
            "gRPC calls that ended with a status other than OK.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "astro_grpc_request_seconds",
            "gRPC call latency in seconds.",
            ["service", "method"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.in_flight = Gauge(
            "astro_grpc_in_flight", "gRPC calls in progress.", ["service"], registry=self.registry
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(self.service, method, code).inc()
        self.latency.labels(self.service, method).observe(seconds)
        if code != "OK":
            self.errors.labels(self.service, method, code).inc()


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    try:
        return str(grpc.StatusCode(code).name)  # some versions return the raw enum value
    except ValueError:
        return default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts calls and times them, labelled by method and final status code."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if _is_unknown_method(handler):
            method = UNKNOWN_METHOD_LABEL
        kind = _handler_kind(handler)
        behavior = getattr(handler, kind)
        metrics = self.metrics

        if inspect.isasyncgenfunction(behavior):

            async def timed_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                start, code = time.perf_counter(), "OK"
                metrics.in_flight.labels(metrics.service).inc()
                try:
                    async for item in behavior(request, context):
                        yield item
                    code = _code_name(context, "OK")
                except asyncio.CancelledError:
                    code = "CANCELLED"  # the client went away or the server is stopping
                    raise
                except BaseException:
                    code = _code_name(context, "UNKNOWN")
                    raise
                finally:
                    metrics.in_flight.labels(metrics.service).dec()
                    metrics.observe(method, code, time.perf_counter() - start)

            return _replace_behavior(handler, kind, timed_stream)

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, code = time.perf_counter(), "OK"
            metrics.in_flight.labels(metrics.service).inc()
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                code = _code_name(context, "OK")
                return result
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code_name(context, "UNKNOWN")
                raise
            finally:
                metrics.in_flight.labels(metrics.service).dec()
                metrics.observe(method, code, time.perf_counter() - start)

        return _replace_behavior(handler, kind, timed)


# Most bytes a status message may take on the wire. Messages quote what the caller sent (a
# 100 kB model name); the message travels in trailing metadata, percent-encoded (a byte
# outside printable ASCII takes three), and over a client's limit (8 KiB soft, 16 KiB hard by
# default) the caller gets RESOURCE_EXHAUSTED "Stream removed" instead of the status chosen.
MAX_DETAILS_WIRE_BYTES = 4096


def _wire_bytes(char: str) -> int:
    return 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "replace"))


def clip_details(details: str) -> str:
    """details, cut to fit MAX_DETAILS_WIRE_BYTES once encoded, with a note of its length."""
    if sum(map(_wire_bytes, details)) <= MAX_DETAILS_WIRE_BYTES:
        return details
    note = f"... [{len(details)} characters in all]"
    budget, kept = MAX_DETAILS_WIRE_BYTES - len(note), 0
    for char in details:
        budget -= _wire_bytes(char)
        if budget < 0:
            break
        kept += 1
    return details[:kept] + note


class _ClippingContext:
    """A handler's context whose status messages are clipped (clip_details). The status
    is fixed when the handler aborts, so it is clipped there, not afterwards."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any) -> Any:
        return await self._context.abort(code, clip_details(details), *args)

    def set_details(self, details: str) -> None:
        self._context.set_details(clip_details(details))


class InternalErrorInterceptor(grpc.aio.ServerInterceptor):
    """An exception a handler did not turn into a status becomes INTERNAL with a message
    (gRPC's own answer is UNKNOWN), and is logged with its traceback; every status message
    is clipped to fit any client (clip_details)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        kind = _handler_kind(handler)
        behavior = getattr(handler, kind)
        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        streamed_requests = kind.startswith("stream_")

        async def decoded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            """The request, or for a request stream one that aborts at an undecodable
            message: grpc itself answers bytes it cannot decode with UNKNOWN."""
            if not streamed_requests:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason(method))
                return request

            async def checked() -> AsyncIterator[Any]:
                async for item in request:
                    if isinstance(item, _Undecodable):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, item.reason(method))
                    yield item

            return checked()

        async def report(exc: Exception, context: grpc.aio.ServicerContext) -> None:
            if isinstance(exc, grpc.aio.AbortError) or _code_name(context, "OK") != "OK":
                raise exc  # already a status the handler chose
            log.exception("unexpected error", extra={"method": method})
            message = clip_details(f"{type(exc).__name__}: {exc}")
            await context.abort(grpc.StatusCode.INTERNAL, message)

        if inspect.isasyncgenfunction(behavior):

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                try:
                    request = await decoded(request, context)
                    async for item in behavior(request, _ClippingContext(context)):
                        yield item
                except Exception as exc:
                    await report(exc, context)

            return _replace_behavior(handler, kind, guarded_stream)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = await decoded(request, context)
                result = behavior(request, _ClippingContext(context))
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as exc:
                await report(exc, context)

        return _replace_behavior(handler, kind, guarded)


class _Undecodable:
    """What a request's bytes became when they are not the method's message."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def reason(self, method: str) -> str:
        return clip_details(f"the request is not a valid {method} message: {self.error}")


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, invalid UTF-8 in a string field
            return _Undecodable(exc)

    return decode
