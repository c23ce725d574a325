"""Configuration of a service process and of clients (pydantic, YAML + ASTRO_* env)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from astro_core.config import ConfigError, format_validation_error, load_config

SettingsT = TypeVar("SettingsT", bound=BaseModel)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class AuthConfig(BaseModel):
    """Optional bearer-token auth. With neither token nor token_file set, auth is off."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(None, description="Shared bearer token (prefer token_file).")
    token_file: str | None = Field(
        None, description="File holding the token, e.g. a mounted Kubernetes Secret."
    )

    def resolve_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"auth.token_file cannot be read: {exc}") from exc
            if not token:
                raise ConfigError(f"auth.token_file {self.token_file} is empty")
            return token
        return None


class TLSConfig(BaseModel):
    """Optional TLS. Servers need cert_file + key_file; clients may pin ca_file."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = Field(None, description="CA bundle clients use to verify the server.")

    def read(self, name: str) -> bytes | None:
        path = getattr(self, name)
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"tls.{name} cannot be read: {exc}") from exc


class ServiceConfig(BaseModel):
    """One service process. Each service may subclass this to add its own section.

    An unknown key is refused (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in a container.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 picks one, null disables."
    )
    grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, time in-flight calls get to finish."
    )
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, gt=0, description="Largest gRPC message sent or received."
    )
    data_dir: str | None = Field(None, description="Local state directory (default ~/.astro).")
    redis_url: str | None = Field(
        None, description="Redis URL; unset means REDIS_URL, else an embedded Redis."
    )
    log_level: str = "INFO"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)
    ready_file: str | None = Field(
        None, description="Written with the bound ports as JSON once the service is serving."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Service-specific settings (engine, model, pool size...)."
    )

    @model_validator(mode="after")
    def _metrics_apart(self) -> ServiceConfig:
        # /metrics needs no token: it must never share the gRPC port.
        if self.port and self.metrics_port == self.port:
            raise ValueError(f"metrics_port must differ from port ({self.port})")
        return self

    def client_config(self, address: str, **fields: Any) -> ClientConfig:
        """How this service reaches a peer at `address`: with its own credentials (the bearer
        token, the TLS settings) and message limit. Every client a service builds comes from
        here, so a token set in the config (e.g. `auth.token_file`, as the chart does) is
        carried on internal calls too."""
        options: dict[str, Any] = {
            "address": address,
            "auth": self.auth.model_copy(),
            "tls": self.tls.model_copy(),
            "max_message_bytes": self.max_message_bytes,
        }
        return ClientConfig(**{**options, **fields})


class ClientConfig(BaseModel):
    """How a client reaches a service."""

    model_config = ConfigDict(extra="forbid")

    address: str = "127.0.0.1:50051"
    timeout_seconds: float = Field(30.0, gt=0, description="Default deadline per call.")
    retry_attempts: int = Field(5, ge=1, le=5, description="Tries on UNAVAILABLE (gRPC caps 5).")
    initial_backoff_seconds: float = Field(0.2, gt=0)
    max_backoff_seconds: float = Field(5.0, gt=0)
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)


def load_service_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ServiceConfig:
    """defaults < YAML < ASTRO_* env < explicit overrides (e.g. --port)."""
    return load_config(ServiceConfig, path, overrides=overrides)


def parse_settings(model: type[SettingsT], raw: Mapping[str, Any]) -> SettingsT:
    """A service's `settings:` section as its pydantic model; a bad value is a ConfigError
    naming the field (`astro serve` prints it as one line)."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source="settings")) from exc


def client_config_from_env(address: str, **fields: Any) -> ClientConfig:
    """A ClientConfig for `address` with the token taken from ASTRO_AUTH__TOKEN(_FILE) if set."""
    auth = AuthConfig(
        token=os.environ.get("ASTRO_AUTH__TOKEN"),
        token_file=os.environ.get("ASTRO_AUTH__TOKEN_FILE"),
    )
    return ClientConfig(address=address, auth=auth, **fields)
