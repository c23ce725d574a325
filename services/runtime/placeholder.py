"""Serve a contract whose logic has not landed yet: every method answers UNIMPLEMENTED.

Health, reflection, metrics, auth and shutdown are real for such a service, so the platform
can be deployed and probed while the method is being written. Replace a service's use of
this with its real servicer when it lands.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor


def _reply_unimplemented(name: str, streaming: bool) -> Any:
    message = f"{name} is not implemented in this release"

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        yield  # pragma: no cover - an async generator, as streaming handlers are

    return stream if streaming else unary


def placeholder_handler(service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    """A handler answering UNIMPLEMENTED for every method of `service`."""
    handlers = {}
    for method in service.methods:
        request_cls = _message_class(method.input_type)
        response_cls = _message_class(method.output_type)
        behavior = _reply_unimplemented(method.full_name, method.server_streaming)
        factory = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            behavior,
            request_deserializer=request_cls.FromString,
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)
