"""`astro serve coordinator` in a child process, for tests that kill it (kill -9) and start
another: the real service, its real run driver, with the settings a test gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO


class CoordinatorProcess:
    def __init__(
        self,
        directory: Path,
        name: str,
        redis_url: str,
        settings: dict[str, Any],
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.ready = directory / f"{name}.ready.json"
        self.ready.unlink(missing_ok=True)
        config = {
            "port": port,
            "metrics_port": None,
            "grace_seconds": 1,
            "redis_url": redis_url,
            "data_dir": str(data_dir),
            "ready_file": str(self.ready),
            "settings": settings,
        }
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = directory / f"{name}.log"
        self.log = self.log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "astro_cli.main",
            "serve",
            "coordinator",
            "--config",
            str(path),
        ]
        # ASTRO_DATA_DIR would win over the config's data_dir (environment over YAML)
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "ASTRO_DATA_DIR": str(data_dir),
            **(env or {}),
        }
        self.process = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=self.log, stderr=self.log
        )

    def address(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "coordinator did not start"
            time.sleep(0.05)
        return str(json.loads(self.ready.read_text())["address"])

    def kill(self) -> None:
        """kill -9: no cleanup of any kind runs in the coordinator."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
