"""`astro up`, `astro status` and SIGTERM as real processes, with a real Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import EXTERNAL_REDIS_URL, external_redis_available

pytestmark = pytest.mark.slow
START_TIMEOUT = 90


def astro(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "astro_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def _wait_for_state(data_dir: Path, proc: subprocess.Popen[str]) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    state_file = data_dir / "up.json"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "astro up exited"
        if state_file.exists():
            return json.loads(state_file.read_text())
        time.sleep(0.2)
    raise AssertionError("astro up did not bring the services to SERVING in time")


@pytest.mark.parametrize("redis_mode", ["embedded", "redis_url"])
def test_up_status_and_sigterm(tmp_path: Path, redis_mode: str) -> None:
    env = os.environ.copy()
    env.pop("REDIS_URL", None)
    if redis_mode == "redis_url":
        if not external_redis_available():
            pytest.skip(f"no Redis server at {EXTERNAL_REDIS_URL}")
        env["REDIS_URL"] = EXTERNAL_REDIS_URL
    config = tmp_path / "up.yaml"
    config.write_text("common:\n  port: 0\n  metrics_port: 0\n  grace_seconds: 2\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "up",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        state = _wait_for_state(tmp_path, proc)
        services = state["services"]
        assert set(services) == {"coordinator", "generator", "verifier", "registry"}
        if redis_mode == "embedded":
            assert state["redis_url"].startswith("unix://")
        else:
            assert state["redis_url"] == EXTERNAL_REDIS_URL

        # Services are told the addresses of the services they call.
        coordinator_config = yaml.safe_load((tmp_path / "up" / "coordinator.yaml").read_text())
        for dependency in ("generator", "verifier", "registry"):
            address = coordinator_config["settings"][f"{dependency}_address"]
            assert address == services[dependency]["address"]

        status = astro("status", "--data-dir", str(tmp_path), env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status.stdout.strip().splitlines()
        assert len(lines) == 4 and all(line.endswith("SERVING") for line in lines)

        # Metrics are served by each process.
        port = services["verifier"]["metrics_port"]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"astro_grpc_requests" in body

        children = psutil.Process(proc.pid).children(recursive=True)
        assert {c.pid for c in children} >= {info["pid"] for info in services.values()}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"orphan processes: {alive}"
        assert not (tmp_path / "up.json").exists()

        # With the platform down, status reports it and fails.
        down = astro("status", "--data-dir", str(tmp_path), "--timeout", "0.5", env=env)
        assert down.returncode == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_unreachable_exits_non_zero() -> None:
    result = astro("status", "--address", "generator=127.0.0.1:1", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stdout.strip().startswith("generator") and "UNREACHABLE" in result.stdout


def test_status_rejects_malformed_address() -> None:
    result = astro("status", "--address", "nonsense")
    assert result.returncode == 2
    assert "NAME=HOST:PORT" in result.stderr


def test_serve_rejects_unknown_service() -> None:
    result = astro("serve", "nonsense")
    assert result.returncode != 0
    assert "unknown service" in result.stderr


def test_serve_rejects_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: -5\n")
    result = astro("serve", "verifier", "--config", str(bad))
    assert result.returncode == 2
    assert "port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("service", "settings", "field"),
    [
        ("verifier", "max_batch_items: lots", "max_batch_items"),
        ("verifier", "timeout_secs: 5", "timeout_secs"),  # a typo is not silently ignored
        ("generator", "max_queue: 0", "max_queue"),
        ("generator", "follow_alias: latest", "follow_alias"),
        ("registry", "sweep_temporary_hours: -1", "sweep_temporary_hours"),
        ("coordinator", "max_active_trees: 0", "max_active_trees"),
    ],
)
def test_serve_rejects_bad_settings_in_one_line(
    tmp_path: Path, service: str, settings: str, field: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"port: 0\nmetrics_port: null\nsettings:\n  {settings}\n")
    env = {**os.environ, "REDIS_URL": EXTERNAL_REDIS_URL}
    result = astro("serve", service, "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {service}: ") and field in line


def test_serve_sigterm_exits_zero(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "serve",
            "verifier",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert info["port"] > 0 and info["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        logs = [
            json.loads(line)
            for line in proc.stderr.read().decode().splitlines()
            if line.startswith("{")
        ]
        assert [entry["msg"] for entry in logs][-2:] == ["stopping", "stopped"]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_start_order_puts_dependencies_first() -> None:
    from services.catalog import SERVICES, start_order

    waves = start_order(list(SERVICES))
    position = {name: i for i, wave in enumerate(waves) for name in wave}
    for name, spec in SERVICES.items():
        assert all(position[d] < position[name] for d in spec.depends_on)
    # A subset without its dependencies still starts.
    assert start_order(["coordinator"]) == [["coordinator"]]


# -- bad input: one line on stderr, a non-zero exit (2 for usage errors), nothing written ---


def one_line(result: subprocess.CompletedProcess[str] | Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return str(lines[0])


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags in (["--port", str(port)], ["--port", "0", "--metrics-port", str(port)]):
            result = astro("serve", "verifier", *flags, "--ready-file", str(tmp_path / "r"))
            assert result.returncode == 1
            assert f"127.0.0.1:{port}" in one_line(result) and "in use" in result.stderr
            assert not (tmp_path / "r").exists()


def test_unknown_keys_in_config_files_are_refused(tmp_path: Path) -> None:
    serve_config = tmp_path / "serve.yaml"
    serve_config.write_text("port: 0\nmetrics_prot: 0\n")
    result = astro("serve", "verifier", "--config", str(serve_config))
    assert result.returncode == 2 and "metrics_prot" in one_line(result)
    up_config = tmp_path / "up.yaml"
    for body, word in [
        ("comon: {}\n", "comon"),
        ("common: {auth: {tokn: x}}\n", "tokn"),
        ("overrides: {genrator: {port: 0}}\n", "genrator"),
    ]:
        up_config.write_text(body)
        result = astro("up", "--config", str(up_config), "--data-dir", str(tmp_path / "d"))
        assert result.returncode == 2 and word in one_line(result), body
        assert not (tmp_path / "d" / "up.json").exists()


def test_status_refuses_an_unknown_service_name() -> None:
    result = astro("status", "--address", "foo=127.0.0.1:1")
    assert result.returncode == 2 and "unknown service 'foo'" in one_line(result)


def test_clone_graph_and_demo_refuse_empty_or_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from astro_cli.main import app

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = run("clone", "--trees", str(empty), "--out", str(tmp_path / "o" / "t.jsonl"))
    assert result.exit_code == 1 and "no trees" in one_line(result)
    assert not (tmp_path / "o").exists()

    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n")
    result = run("graph", "--trace", str(blank), "--out", str(tmp_path / "g" / "t.svg"))
    assert result.exit_code == 1 and "empty" in one_line(result)
    trees = tmp_path / "trees.jsonl"
    trees.write_text('{"problem_id": "p"}\n')
    for spec in (f"{trees}:-1", f"{trees}:0"):
        result = run("graph", "--tree", spec, "--out", str(tmp_path / "g" / "t.svg"))
        assert result.exit_code == 2 and "line numbers start at 1" in one_line(result)
    assert not (tmp_path / "g").exists()

    # (the demo's old --limit is gone; its bad option now is an unknown preset)
    result = run("demo", "--preset", "huge", "--data-dir", str(tmp_path / "demo"))
    assert result.exit_code == 2 and "--preset" in one_line(result)
    assert not (tmp_path / "demo").exists()  # validated before anything started
