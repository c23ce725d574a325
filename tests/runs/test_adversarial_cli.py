"""`astro run` given hostile files and flags: a usage error exits 2 with one line naming the
option, never a traceback, and asks nothing of the coordinator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from tests.runs.conftest import Coordinator

UNREACHABLE = "127.0.0.1:1"  # a usage error must be found before any call


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_line_error(result: Any, code: int, starts: str) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    return str(lines[0])


def spec_text(model_dir: Path, config: str, name: str = "adversary") -> str:
    return (
        f"name: {name}\nstages: [search, clone]\nbase_model: {model_dir}\n"
        f"problems_path: 'synth:product?n=2'\nconfig: {config}\n"
    )


@pytest.mark.parametrize(
    "config",
    [
        "[" * 20000 + "]" * 20000,  # flow style
        "\n" + "".join(" " * i + "a:\n" for i in range(1, 800)),  # block style
    ],
    ids=["flow", "block"],
)
def test_a_spec_file_nested_too_deeply_is_a_usage_error(
    tmp_path: Path, model_dir: Path, config: str
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(spec_text(model_dir, config))
    result = invoke("run", "--config", str(path), "--coordinator", UNREACHABLE)
    one_line_error(result, 2, "--config:")


def test_what_only_the_coordinator_refuses_is_a_usage_error(
    coordinator: Coordinator, tmp_path: Path, model_dir: Path
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(spec_text(model_dir, "{clone: " + "[" * 40 + "]" * 40 + "}"))
    result = invoke("run", "--config", str(path), "--coordinator", coordinator.address)
    line = one_line_error(result, 2, f"coordinator at {coordinator.address}: INVALID_ARGUMENT:")
    assert "config_yaml: nests lists or mappings" in line
    path.write_text(spec_text(model_dir, "{}", name='"\\e[2J\\e[31mred"'))
    result = invoke("run", "--config", str(path), "--coordinator", coordinator.address)
    assert "name: holds control characters" in one_line_error(result, 2, "coordinator at")
    assert not coordinator.client.list().runs


@pytest.mark.parametrize("wait", ["nan", "-1", "inf", "-inf"])
def test_cancel_with_a_wait_that_is_not_a_duration_is_a_usage_error(wait: str) -> None:
    result = invoke(
        "run", "cancel", "0123456789abcdef", "--wait", wait, "--coordinator", UNREACHABLE
    )
    one_line_error(result, 2, "--wait:")
