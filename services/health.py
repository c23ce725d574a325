"""Health checks of running services over grpc.health.v1."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig


def check_health(config: ClientConfig, service: str = "", timeout: float = 2.0) -> str:
    """'SERVING', 'NOT_SERVING', 'UNKNOWN', 'SERVICE_UNKNOWN', or 'UNREACHABLE: <detail>'."""
    channel = sync_channel(config.model_copy(update={"retry_attempts": 1}), default_timeout=timeout)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return f"UNREACHABLE: {exc.code().name}"
    finally:
        channel.close()
