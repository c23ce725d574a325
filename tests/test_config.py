from __future__ import annotations

from pathlib import Path

import pytest

from astro_core.config import ConfigError, env_overrides, load_config
from services.runtime.config import ServiceConfig


def test_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("port: 6000\nauth:\n  token: from-yaml\nmax_message_bytes: 1024\n")
    env = {"ASTRO_PORT": "7000", "ASTRO_AUTH__TOKEN": "from-env", "ASTRO_UNRELATED": "x"}
    config = load_config(ServiceConfig, path, environ=env)
    assert config.port == 7000
    assert config.auth.token == "from-env"
    assert config.max_message_bytes == 1024
    config = load_config(ServiceConfig, path, environ=env, overrides={"port": 7100})
    assert config.port == 7100


def test_env_values_are_typed() -> None:
    assert env_overrides(environ={"ASTRO_TLS__ENABLED": "true", "ASTRO_PORT": "12"}) == {
        "tls": {"enabled": True},
        "port": 12,
    }


def test_invalid_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("port: 99999\n")
    with pytest.raises(ConfigError, match=r"port"):
        load_config(ServiceConfig, path, environ={})


@pytest.mark.parametrize("text", ["- a\n- b\n", "port: [unclosed\n"])
def test_malformed_yaml_is_reported(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(ServiceConfig, path, environ={})


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(ServiceConfig, tmp_path / "nope.yaml", environ={})


def test_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = load_config(ServiceConfig, environ={"ASTRO_AUTH__TOKEN_FILE": str(secret)})
    assert config.auth.resolve_token() == "s3cret"
    secret.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        config.auth.resolve_token()
