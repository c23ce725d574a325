"""Configuration as pydantic models loaded from YAML, with `ASTRO_*` environment overrides.

Every config class of the project is a pydantic model; this module is the one place that
turns a YAML file plus the environment into such a model.

Environment overrides use the prefix and `__` as the nesting separator:
`ASTRO_PORT=6000` sets `port`, `ASTRO_AUTH__TOKEN=abc` sets `auth.token`. Values are parsed
as YAML scalars, so `ASTRO_TLS__ENABLED=true` is a bool and `ASTRO_PORT=6000` an int.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration could not be read or is invalid; the message names the field."""


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file holding a mapping (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def env_overrides(
    prefix: str = "ASTRO_", environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Collect `PREFIX_A__B=value` variables into a nested mapping {"a": {"b": value}}."""
    environ = os.environ if environ is None else environ
    result: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix) or len(key) == len(prefix):
            continue
        path = key[len(prefix) :].lower().split("__")
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = _parse_scalar(raw)
    return result


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # Keep strings that YAML would turn into mappings/lists as plain text.
    return value if isinstance(value, str | int | float | bool) or value is None else raw


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return base updated by override, merging nested mappings key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _known_fields(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Keep only the env keys that name fields, so unrelated ASTRO_* variables are harmless."""
    kept: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            kept[key] = _known_fields(sub, value)
        else:
            kept[key] = value
    return kept


def load_config(
    model: type[ModelT],
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env_prefix: str | None = "ASTRO_",
    environ: Mapping[str, str] | None = None,
) -> ModelT:
    """Build `model` from defaults < YAML file < environment < explicit overrides."""
    data: dict[str, Any] = read_yaml_mapping(path) if path else {}
    if env_prefix:
        data = deep_merge(data, _known_fields(model, env_overrides(env_prefix, environ)))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path) if path else None)) from exc


def format_validation_error(exc: ValidationError, source: str | None = None) -> str:
    """One line per problem, each naming the dotted field path."""
    where = f" in {source}" if source else ""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"invalid config{where}: {field}: {err['msg']}")
    return "; ".join(lines)
