"""`astro up`: every service as a child process on loopback, with one shared Redis.

Each child is the same `astro serve NAME` a container runs. The launcher writes each child
a config file, waits for its ready file (the bound ports), then for SERVING on gRPC health,
and records the addresses in `<data_dir>/up.json` for `astro status` and other clients.

Children are tied to the launcher: the kernel sends them SIGTERM when it dies, even by
SIGKILL (services/runtime/processes.py). While up, `supervise` restarts a child that exits,
on the same ports, after a backoff that doubles with each restart, and gives up (stopping
everything) once one service needed `max_restarts` restarts within `restart_window_seconds`.
On stop it sends SIGTERM to every child, waits for their graceful exit, and kills stragglers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from astro_core.config import deep_merge, format_validation_error
from astro_core.paths import data_dir as default_data_dir
from services.catalog import SERVICES, start_order
from services.health import check_health
from services.runtime.config import ClientConfig, ServiceConfig
from services.runtime.processes import kill_group, spawn_tied, stop_process, wait_or_kill
from services.runtime.redis_store import RedisHandle, connect_redis

log = logging.getLogger("astro.launcher")
STATE_FILE = "up.json"
MAX_RESTART_BACKOFF_SECONDS = 30.0


class UpConfig(BaseModel):
    """Configuration of `astro up`."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = Field(None, description="State directory (default ~/.astro).")
    host: str = "127.0.0.1"
    redis_url: str | None = Field(None, description="Redis URL; unset: REDIS_URL, else embedded.")
    services: list[str] = Field(default_factory=lambda: list(SERVICES))
    start_timeout_seconds: float = Field(120.0, gt=0)
    stop_timeout_seconds: float = Field(30.0, gt=0)
    max_restarts: int = Field(
        5,
        ge=0,
        description="Restarts of one service within restart_window_seconds; one more exit "
        "stops the platform (0: never restart).",
    )
    restart_window_seconds: float = Field(300.0, gt=0, description="See max_restarts.")
    restart_backoff_seconds: float = Field(
        1.0, gt=0, description="Wait before a restart; doubles per recent restart, up to 30 s."
    )
    common: dict[str, Any] = Field(
        default_factory=dict, description="ServiceConfig fields given to every service."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="ServiceConfig fields per service, e.g. {generator: {port: 0}}.",
    )

    @model_validator(mode="after")
    def _services_and_configs_valid(self) -> UpConfig:
        for name in [*self.services, *self.overrides]:
            if name not in SERVICES:
                raise ValueError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
        for name in self.services:
            self.service_config(name)  # a typo in common/overrides fails here, not in a child
        return self

    def service_config(self, name: str) -> ServiceConfig:
        """The ServiceConfig fields `common` and `overrides` give service `name`."""
        try:
            return ServiceConfig.model_validate(
                deep_merge(self.common, self.overrides.get(name, {}))
            )
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, source=f"the config of {name}")) from None


class LocalPlatform:
    """Start, supervise and stop the local platform."""

    def __init__(self, config: UpConfig, report: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.dir = Path(config.data_dir) if config.data_dir else default_data_dir()
        self.run_dir = self.dir / "up"
        self.redis: RedisHandle | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.addresses: dict[str, dict[str, Any]] = {}
        self.restarts: dict[str, list[float]] = {}  # monotonic times of each service's restarts
        self._report = report or log.warning

    def start(self) -> dict[str, dict[str, Any]]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis = connect_redis(self.config.redis_url, self.dir / "redis")
            deadline = time.monotonic() + self.config.start_timeout_seconds
            # In waves, so a service is told the addresses of those it calls (ports may be 0).
            for wave in start_order(self.config.services):
                for name in wave:
                    self._spawn(name)
                for name in wave:
                    self.addresses[name] = self._wait_ready(name, deadline)
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self.addresses

    def _spawn(self, name: str, ports: dict[str, Any] | None = None) -> None:
        """Start `astro serve NAME`; `ports` pins the ports it had (a restart)."""
        spec = SERVICES[name]
        ready = self.run_dir / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        service_config = deep_merge(
            {
                "host": self.config.host,
                "port": spec.port,
                "metrics_port": spec.metrics_port,
                "data_dir": str(self.dir),
                "ready_file": str(ready),
            },
            deep_merge(self.config.common, self.config.overrides.get(name, {})),
        )
        if ports is not None:
            service_config.update(port=ports["port"], metrics_port=ports["metrics_port"])
        if spec.needs_redis:
            assert self.redis is not None
            service_config["redis_url"] = self.redis.url
        settings = service_config.setdefault("settings", {})
        for dependency in spec.depends_on:
            if dependency in self.addresses:
                settings.setdefault(f"{dependency}_address", self.addresses[dependency]["address"])
        config_path = self.run_dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(service_config))
        cmd = [sys.executable, "-m", "astro_cli.main", "serve", name, "--config", str(config_path)]
        with (self.run_dir / f"{name}.log").open("ab") as log_file:
            self.children[name] = spawn_tied(
                cmd,
                name=name,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=os.environ,
                # Its own process group: a terminal's Ctrl-C reaches `astro up`, which stops
                # the children in order, and a crashed child's own children can be cleared.
                start_new_session=True,
            )

    def _wait_ready(
        self, name: str, deadline: float, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        ready = self.run_dir / f"{name}.ready.json"
        child = self.children[name]
        own = self.config.service_config(name)  # its credentials, for the health check
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            if child.poll() is not None:
                raise RuntimeError(
                    f"service {name} exited with code {child.returncode} during start; "
                    f"see {self.run_dir / (name + '.log')}"
                )
            if ready.exists():
                info: dict[str, Any] = json.loads(ready.read_text())
                if check_health(own.client_config(info["address"])) == "SERVING":
                    return info
            time.sleep(0.1)
        raise TimeoutError(f"service {name} did not become SERVING in time")

    def client_config(self, address: str) -> ClientConfig:
        """How a client of this platform reaches `address`: the credentials in `common`."""
        return ServiceConfig.model_validate(self.config.common).client_config(address)

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "redis_url": self.redis.url if self.redis else None,
            "services": self.addresses,
        }
        path = self.dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    def supervise(self, stop: threading.Event, poll_seconds: float = 0.5) -> int:
        """Until `stop` is set: restart children that exit (logged, with backoff). Returns 0
        when stopped, 1 when a service exhausted its restarts (the caller stops everything)."""
        due: dict[str, float] = {}  # service -> when to restart it
        while not stop.wait(poll_seconds):
            now = time.monotonic()
            for name, child in self.children.items():
                code = child.poll()
                if code is None or name in due:
                    continue
                kill_group(child)  # what the dead child left running
                recent = [t for t in self.restarts.get(name, []) if now - t < self.window]
                self.restarts[name] = recent
                if len(recent) >= self.config.max_restarts:
                    self._report(
                        f"service {name} exited with code {code} after {len(recent)} restarts "
                        f"in {self.window:.0f}s; stopping the platform"
                    )
                    return 1
                delay = min(
                    self.config.restart_backoff_seconds * 2 ** len(recent),
                    MAX_RESTART_BACKOFF_SECONDS,
                )
                self._report(
                    f"service {name} exited with code {code}; restarting it in {delay:.1f}s "
                    f"(restart {len(recent) + 1} of at most {self.config.max_restarts})"
                )
                due[name] = now + delay
            for name, when in list(due.items()):
                if time.monotonic() >= when and not stop.is_set():
                    del due[name]
                    self._restart(name, stop)
        return 0

    @property
    def window(self) -> float:
        return self.config.restart_window_seconds

    def _restart(self, name: str, stop: threading.Event) -> None:
        self.restarts.setdefault(name, []).append(time.monotonic())
        self._spawn(name, ports=self.addresses[name])
        deadline = time.monotonic() + self.config.start_timeout_seconds
        try:
            self.addresses[name] = self._wait_ready(name, deadline, stop)
        except (RuntimeError, TimeoutError) as exc:
            # Counted like any exit: the next supervision round sees it and decides.
            stop_process(self.children[name], self.config.stop_timeout_seconds)
            if not stop.is_set():
                self._report(f"restart of service {name} failed: {exc}")
            return
        self._write_state()
        self._report(f"service {name} is back (pid {self.addresses[name]['pid']})")

    def stop(self) -> dict[str, int]:
        """SIGTERM every child, wait for graceful exits, kill what remains. Returns exit codes."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        codes: dict[str, int] = {}
        for name, child in self.children.items():
            codes[name] = wait_or_kill(child, max(0.0, deadline - time.monotonic()))
            kill_group(child)
        self.children.clear()
        state = self.dir / STATE_FILE
        if state.exists() and json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        return codes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def read_state(directory: str | Path | None = None) -> dict[str, Any] | None:
    """The addresses `astro up` recorded, or None when it is not running (no state, or the
    state of an `astro up` that died without removing it)."""
    path = (Path(directory) if directory else default_data_dir()) / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state.get("pid"), int) or not _alive(state["pid"]):
        return None
    return state
