"""The runtime every service shares: config, server, auth, metrics, logs, clients, Redis."""

from services.runtime.client import aio_channel, sync_channel
from services.runtime.config import AuthConfig, ClientConfig, ServiceConfig, TLSConfig
from services.runtime.server import ServiceRuntime

__all__ = [
    "AuthConfig",
    "ClientConfig",
    "ServiceConfig",
    "ServiceRuntime",
    "TLSConfig",
    "aio_channel",
    "sync_channel",
]
