"""`astro up`: every service as a child process on loopback, with one shared Redis.

Each child is the same `astro serve NAME` a container runs. The launcher writes each child
a config file, waits for its ready file (the bound ports), then for SERVING on gRPC health,
and records the addresses in `<data_dir>/up.json` for `astro status` and other clients.
On stop it sends SIGTERM to every child, waits for their graceful exit, and kills stragglers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from astro_core.config import deep_merge
from astro_core.paths import data_dir as default_data_dir
from services.catalog import SERVICES, start_order
from services.health import check_health
from services.runtime.config import ClientConfig
from services.runtime.redis_store import RedisHandle, connect_redis

log = logging.getLogger("astro.launcher")
STATE_FILE = "up.json"


class UpConfig(BaseModel):
    """Configuration of `astro up`."""

    data_dir: str | None = Field(None, description="State directory (default ~/.astro).")
    host: str = "127.0.0.1"
    redis_url: str | None = Field(None, description="Redis URL; unset: REDIS_URL, else embedded.")
    services: list[str] = Field(default_factory=lambda: list(SERVICES))
    start_timeout_seconds: float = Field(120.0, gt=0)
    stop_timeout_seconds: float = Field(30.0, gt=0)
    common: dict[str, Any] = Field(
        default_factory=dict, description="ServiceConfig fields given to every service."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="ServiceConfig fields per service, e.g. {generator: {port: 0}}.",
    )


class LocalPlatform:
    """Start, watch and stop the local platform."""

    def __init__(self, config: UpConfig) -> None:
        self.config = config
        self.dir = Path(config.data_dir) if config.data_dir else default_data_dir()
        self.run_dir = self.dir / "up"
        self.redis: RedisHandle | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.addresses: dict[str, dict[str, Any]] = {}

    def start(self) -> dict[str, dict[str, Any]]:
        unknown = [s for s in self.config.services if s not in SERVICES]
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.redis = connect_redis(self.config.redis_url, self.dir / "redis")
        try:
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

    def _spawn(self, name: str) -> None:
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
        if spec.needs_redis:
            assert self.redis is not None
            service_config["redis_url"] = self.redis.url
        settings = service_config.setdefault("settings", {})
        for dependency in spec.depends_on:
            if dependency in self.addresses:
                settings.setdefault(f"{dependency}_address", self.addresses[dependency]["address"])
        config_path = self.run_dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(service_config))
        log_file = (self.run_dir / f"{name}.log").open("ab")
        cmd = [sys.executable, "-m", "astro_cli.main", "serve", name, "--config", str(config_path)]
        self.children[name] = subprocess.Popen(
            cmd, stdout=log_file, stderr=log_file, env=os.environ
        )
        log_file.close()

    def _wait_ready(self, name: str, deadline: float) -> dict[str, Any]:
        ready = self.run_dir / f"{name}.ready.json"
        child = self.children[name]
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(
                    f"service {name} exited with code {child.returncode} during start; "
                    f"see {self.run_dir / (name + '.log')}"
                )
            if ready.exists():
                info: dict[str, Any] = json.loads(ready.read_text())
                status = check_health(self.client_config(info["address"]))
                if status == "SERVING":
                    return info
            time.sleep(0.1)
        raise TimeoutError(f"service {name} did not become SERVING in time")

    def client_config(self, address: str) -> ClientConfig:
        auth = {**self.config.common.get("auth", {})}
        return ClientConfig(address=address, auth=auth)

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "redis_url": self.redis.url if self.redis else None,
            "services": self.addresses,
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def failed_child(self) -> str | None:
        """Name of a child that exited on its own, if any."""
        for name, child in self.children.items():
            if child.poll() is not None:
                return name
        return None

    def stop(self) -> dict[str, int]:
        """SIGTERM every child, wait for graceful exits, kill what remains. Returns exit codes."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        codes: dict[str, int] = {}
        for name, child in self.children.items():
            try:
                codes[name] = child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                codes[name] = child.wait()
        self.children.clear()
        state = self.dir / STATE_FILE
        if state.exists() and json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        return codes


def read_state(directory: str | Path | None = None) -> dict[str, Any] | None:
    """The addresses `astro up` recorded, or None when it is not running."""
    path = (Path(directory) if directory else default_data_dir()) / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state
