"""`astro run` against a coordinator on loopback: exit codes, one-line errors, the stage
figures, status/list/watch/cancel, and Ctrl-C detaching from a run that goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from astro_cli.main import app
from tests.conftest import REPO
from tests.runs.conftest import Coordinator, wait_for


def write_spec(path: Path, model_dir: Path, **fields: object) -> Path:
    data: dict[str, object] = {
        "name": "cli",
        "stages": ["search", "clone"],
        "base_model": str(model_dir),
        "problems_path": "synth:product?n=3&seed=4",
        "config": {"search": {"iterations": 2}, "clone": {"preset": "cpu"}},
    }
    data.update(fields)
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_a_run_that_succeeds_exits_0_with_each_stage_s_figures(
    coordinator: Coordinator, model_dir: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "run.yaml", model_dir)
    result = invoke("run", "--config", str(spec), "--coordinator", coordinator.address)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.output  # type: ignore[attr-defined]
    assert "search: 3 trees, 3 with correct and incorrect terminals" in out
    assert "clone: " in out and " traces, " in out and "backtracks per trace" in out
    rid = out.split("run ", 1)[1].split(" ", 1)[0]
    assert f"run {rid} succeeded" in out
    status = invoke("run", "status", rid, "--coordinator", coordinator.address)
    assert status.exit_code == 0  # type: ignore[attr-defined]
    text = status.output  # type: ignore[attr-defined]
    assert f"run      {rid} (cli)" in text and "state    succeeded" in text
    assert "  search          succeeded 3/3" in text and "trees: " in text
    listed = invoke("run", "list", "--coordinator", coordinator.address)
    assert rid in listed.output and "succeeded" in listed.output  # type: ignore[attr-defined]
    again = invoke("run", "watch", rid, "--coordinator", coordinator.address)
    assert again.exit_code == 0 and f"run {rid} succeeded" in again.output  # type: ignore[attr-defined]
    cancelled = invoke("run", "cancel", rid, "--coordinator", coordinator.address)
    assert cancelled.exit_code == 1  # type: ignore[attr-defined]
    assert f"run {rid} had already succeeded" in cancelled.output  # type: ignore[attr-defined]


def test_a_failed_run_exits_1_with_the_stage_s_reason(
    coordinator: Coordinator, model_dir: Path, tmp_path: Path
) -> None:
    (coordinator.data_dir / "other.jsonl").write_text(
        '{"problem": "What is 1+1?", "answer": "2"}\n'
    )
    spec = write_spec(tmp_path / "run.yaml", model_dir, problems_path="other.jsonl")
    result = invoke("run", "--config", str(spec), "--coordinator", coordinator.address)
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    last = result.output.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert last.startswith("error: run ") and " failed: search: search " in last
    assert "not a product-family prompt" in last


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stages": ["search", "nope"]}, "stages[1]: unknown stage 'nope'"),
        ({"config": {"search": {"iterations": -2}}}, "config_yaml.search.iterations:"),
        ({"problems_path": "/etc/passwd"}, "problems_path: no dataset"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"base_model": "tiny:x"}, "base_model: version in 'tiny:x' must be a positive integer"),
    ],
)
def test_spec_errors_exit_2_with_one_line(
    coordinator: Coordinator, model_dir: Path, tmp_path: Path, fields: dict, message: str
) -> None:
    spec = write_spec(tmp_path / "run.yaml", model_dir, **fields)
    result = invoke("run", "--config", str(spec), "--coordinator", coordinator.address)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and message in lines[0], lines


def test_usage_errors(coordinator: Coordinator, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("stages: [search\n")
    for args, code, message in [
        (["run"], 2, "--config is required"),
        (["run", "--config", str(tmp_path / "none.yaml")], 2, "--config: no file at"),
        (["run", "--config", str(tmp_path / "bad.yaml")], 2, "is not valid YAML"),
        (["run", "list", "--limit", "0"], 2, "--limit: must be between 1 and 100"),
        (["run", "status", "nope", "--coordinator", coordinator.address], 2, "is not a run id"),
        (["run", "status", "0" * 16, "--coordinator", coordinator.address], 1, "NOT_FOUND"),
    ]:
        result = invoke(*args)
        assert result.exit_code == code, (args, result.output)  # type: ignore[attr-defined]
        assert message in result.output, (args, result.output)  # type: ignore[attr-defined]
        assert len(result.output.strip().splitlines()) == 1  # type: ignore[attr-defined]


def test_ctrl_c_detaches_and_the_run_goes_on(
    start_coordinator: object, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRO_FAKE_GENERATE_DELAY", "0.2")
    coordinator = start_coordinator()  # type: ignore[operator]
    spec = write_spec(tmp_path / "run.yaml", model_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "astro_cli.main", "run", "--config", str(spec),
         "--coordinator", coordinator.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not coordinator.client.list().runs:
            assert time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.1)
        rid = coordinator.client.list().runs[0].run_id
        time.sleep(1.0)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, (out, err)
    assert f"detached; run {rid} goes on. Re-attach: astro run watch {rid}" in err
    status = wait_for(coordinator.client, rid)
    assert status.state == "succeeded"


def test_a_relative_model_path_is_taken_from_the_spec_s_folder(
    coordinator: Coordinator, model_dir: Path
) -> None:
    spec = write_spec(model_dir.parent / "run.yaml", model_dir, base_model="./model")
    result = invoke("run", "--config", str(spec), "--coordinator", coordinator.address, "--detach")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    rid = result.output.split("run ", 1)[1].split(" ", 1)[0]  # type: ignore[attr-defined]
    status = coordinator.client.get(rid)
    assert status.spec.base_model.path == str(model_dir)
    assert wait_for(coordinator.client, rid).state == "succeeded"


def test_eval_figures_read_in_the_pipeline_s_order() -> None:
    """A stage's metrics arrive as a map in no order; the eval line reads base, SFT, the RL
    checkpoints by step, then the Direct arms, whatever order they came in."""
    from astro_cli.commands.run import headline

    metrics = {
        "direct_sft.heldout.accuracy": 0.25,
        "grpo-step16.heldout.accuracy": 0.5,
        "grpo-step8.heldout.accuracy": 0.375,
        "sft.heldout.backtracks": 1.5,  # not an accuracy: not on the line
        "base.heldout.accuracy": 0.125,
        "sft.heldout.accuracy": 0.25,
    }
    expected = (
        "base.heldout 12.5%, sft.heldout 25.0%, grpo-step8.heldout 37.5%, "
        "grpo-step16.heldout 50.0%, direct_sft.heldout 25.0%"
    )
    assert headline("eval", metrics) == expected
    assert headline("eval", dict(reversed(list(metrics.items())))) == expected
