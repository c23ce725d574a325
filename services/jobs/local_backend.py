"""The `local` trainer backend: each job is a child process (used by `astro up` and the demo).

A job gets a directory `<workdir>/<name>/` holding `config.yaml` (the job's config, with
`output_dir` defaulting to `<workdir>/<name>/output`), `stdout.log` and `stderr.log`; the
process runs `astro train <stage> --config <dir>/config.yaml` (or the configured command
template) in its own process group.

Cancel terminates the whole group (SIGTERM, then SIGKILL after `grace_seconds`). The group
also ends with this process, however it ends: its leader is a small watchdog
(services/jobs/supervise.py) that runs the command and ends the group once its owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from services.jobs.backend import JobConflict, JobHandle, JobStatus, last_status
from services.jobs.spec import TrainJob, check_stage_config

DEFAULT_COMMAND = (
    sys.executable,
    "-m",
    "astro_cli.main",
    "train",
    "{stage}",
    "--config",
    "{config}",
)
_TAIL_BYTES = 64 * 1024


def last_line(path: Path) -> str:
    """The last non-empty line of a (log) file, or ""."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - _TAIL_BYTES, 0))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


class LocalTrainerBackend:
    """Trainer jobs as child processes of this process."""

    name = "local"

    def __init__(
        self,
        workdir: str | Path,
        command: Sequence[str] | None = None,
        grace_seconds: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.command = list(command or DEFAULT_COMMAND)
        self.grace_seconds = grace_seconds
        self.env = env
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._digests: dict[str, str] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def job_dir(self, handle: JobHandle) -> Path:
        return self.workdir / handle.name

    def start(self, job: TrainJob) -> JobHandle:
        name = job.name("astro")
        handle = JobHandle(self.name, name)
        with self._lock:
            if name in self._processes:
                if self._digests[name] != job.digest():
                    raise JobConflict(f"a different local job named {name} was started")
                return handle
            directory = self.job_dir(handle)
            config = job.with_defaults({"output_dir": str(directory / "output")})
            check_stage_config(job.stage, config)  # a bad config writes nothing
            directory.mkdir(parents=True, exist_ok=True)
            config_path = directory / "config.yaml"
            tmp = config_path.with_suffix(".yaml.tmp")
            tmp.write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
            tmp.replace(config_path)
            fill = {"{stage}": job.stage, "{config}": str(config_path), "{name}": name}
            argv = [self._fill(part, fill) for part in self.command]
            if shutil.which(argv[0]) is None:
                raise RuntimeError(f"cannot start the trainer command {argv[0]}: not found")
            self._processes[name] = self._spawn(argv, directory)
            self._digests[name] = job.digest()
        return handle

    @staticmethod
    def _fill(part: str, fill: dict[str, str]) -> str:
        for key, value in fill.items():
            part = part.replace(key, value)
        return part

    def _spawn(self, argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1")
        # the watchdog must import services/ whatever the command's own path setup is
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        watchdog = [
            sys.executable,
            "-m",
            "services.jobs.supervise",
            str(os.getpid()),
            str(self.grace_seconds),
            "--",
        ]
        with (
            (directory / "stdout.log").open("ab") as stdout,
            (directory / "stderr.log").open("ab") as stderr,
        ):
            return subprocess.Popen(
                watchdog + argv,
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: cancel ends all of it
            )

    def status(self, handle: JobHandle) -> JobStatus:
        process = self._processes.get(handle.name)
        if process is None:
            return JobStatus(
                "failed",
                "Lost",
                f"no local job {handle.name} in this process (a local job ends with the "
                "process that started it)",
            )
        code = process.poll()
        if code is None:
            return JobStatus("running")
        if handle.name in self._cancelled:
            return JobStatus("cancelled", "Cancelled", "cancelled", exit_code=code)
        if code == 0:
            return JobStatus("succeeded", exit_code=0)
        if code < 0:
            signame = signal.Signals(-code).name
            return JobStatus("failed", "Signal", f"killed by {signame}", exit_code=code)
        stderr = last_line(self.job_dir(handle) / "stderr.log")
        message = f"exit code {code}" + (f": {stderr}" if stderr else "")
        return JobStatus("failed", "ExitCode", message, exit_code=code)

    def watch(self, handle: JobHandle, timeout: float | None = None) -> Iterator[JobStatus]:
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.status(handle)
        yield status
        process = self._processes.get(handle.name)
        while process is not None and not status.done:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
            current = self.status(handle)
            if current != status:
                status = current
                yield status

    def wait(self, handle: JobHandle, timeout: float | None = None) -> JobStatus:
        return last_status(self.watch(handle, timeout))

    def cancel(self, handle: JobHandle) -> JobStatus:
        process = self._processes.get(handle.name)
        if process is not None and process.poll() is None:
            self._cancelled.add(handle.name)
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                self._signal_group(process.pid, signal.SIGKILL)
                process.wait()
            self._signal_group(process.pid, signal.SIGKILL)  # stragglers of the group
        return self.status(handle)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def close(self) -> None:
        """Cancel every running job."""
        for name in list(self._processes):
            self.cancel(JobHandle(self.name, name))
