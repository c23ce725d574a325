"""The TrainerBackend seam: where trainer jobs run, behind four calls.

    backend = trainer_backend(settings.trainer, data_dir)   # the coordinator's settings
    handle = backend.start(job)          # a TrainJob (services/jobs/spec.py)
    backend.status(handle)               # JobStatus, now
    for status in backend.watch(handle, timeout=3600): ...   # each change until it ends
    backend.wait(handle, timeout=3600)   # the last of those
    backend.cancel(handle)               # stop it; its pods/processes go too
    backend.close()

Two backends: `kubernetes` (a Job per job, services/jobs/kubernetes_backend.py) and `local`
(a child process, services/jobs/local_backend.py). A JobHandle is plain data (`to_dict`), so a
run record can keep it and another coordinator replica can follow a Kubernetes Job after a
crash; a local job lives and dies with the process that started it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from services.jobs.spec import TrainJob

JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobHandle:
    """Names a started job: the backend, the job's name and, on Kubernetes, its namespace."""

    backend: str
    name: str
    namespace: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobHandle:
        return cls(str(data["backend"]), str(data["name"]), str(data.get("namespace", "")))


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. A failure says why: `reason` is a short code (BackoffLimitExceeded,
    DeadlineExceeded, PodFailurePolicy, ExitCode, Signal, Lost), `message` the details (the
    pod's termination message, the process's last stderr line)."""

    state: JobState
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class TrainerBackendError(RuntimeError):
    """The backend could not do what was asked (e.g. the Kubernetes API refused it)."""


class JobConflict(TrainerBackendError):
    """A different job with the same name exists (e.g. a run stage started with other settings)."""


class TrainerBackend(Protocol):
    name: str

    def start(self, job: TrainJob) -> JobHandle:
        """Start the job (idempotent: the same job started twice is one job)."""
        ...

    def status(self, handle: JobHandle) -> JobStatus: ...

    def watch(self, handle: JobHandle, timeout: float | None = None) -> Iterator[JobStatus]:
        """The status now, then each change, until the job ends or `timeout` seconds pass."""
        ...

    def wait(self, handle: JobHandle, timeout: float | None = None) -> JobStatus:
        """Block until the job ends (or `timeout` passes); its last status."""
        ...

    def cancel(self, handle: JobHandle) -> JobStatus:
        """Stop the job and remove what runs it; ending an ended job changes nothing."""
        ...

    def close(self) -> None: ...


def last_status(statuses: Iterator[JobStatus]) -> JobStatus:
    """The final item of a watch (wait() in terms of watch())."""
    last: JobStatus | None = None
    for status in statuses:
        last = status
    if last is None:  # a watch always yields the current status first
        raise RuntimeError("watch yielded no status")
    return last


class TrainerBackendSettings(BaseModel):
    """Where the coordinator runs trainer jobs (`settings.trainer` of its ServiceConfig)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "kubernetes"] = Field(
        "local", description="local: child processes; kubernetes: Jobs in the cluster."
    )
    # kubernetes
    values_file: str = Field(
        "",
        description="kubernetes: the chart values Jobs are built from; the chart mounts the "
        "release's values here. Empty: the chart's defaults (chart_dir).",
    )
    chart_dir: str = Field("", description="kubernetes: the chart; default $ASTRO_CHART_DIR.")
    release: str = Field("astro", description="kubernetes: the Helm release's name.")
    namespace: str = Field(
        "", description="kubernetes: default the pod's own namespace, else kubeconfig's."
    )
    kubeconfig: str = Field(
        "", description="kubernetes: outside a cluster, this kubeconfig (default ~/.kube/config)."
    )
    context: str = Field("", description="kubernetes: kubeconfig context; default its current.")
    propagation_policy: Literal["Background", "Foreground"] = Field(
        "Background", description="kubernetes: how cancel deletes a Job's pods."
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="kubernetes: deadline of one API request."
    )
    watch_timeout_seconds: int = Field(
        60, ge=1, le=3600, description="kubernetes: longest single watch request (then resumed)."
    )
    # local
    workdir: str = Field(
        "", description="local: job directories (config, logs, outputs); default <data_dir>/jobs."
    )
    command: list[str] = Field(
        default_factory=list,
        description="local: the command, with {stage}, {config} and {name} filled in; default "
        "`<python> -m astro_cli.main train {stage} --config {config}`.",
    )
    grace_seconds: float = Field(
        10.0, ge=0, le=600, description="local: on cancel, SIGTERM then this long before SIGKILL."
    )


def trainer_backend(
    settings: TrainerBackendSettings, data_dir: str | Path, env: dict[str, str] | None = None
) -> TrainerBackend:
    """The backend the settings name; `env` is the environment local jobs start in (default:
    this process's)."""
    if settings.backend == "kubernetes":
        from services.jobs.kubernetes_backend import KubernetesTrainerBackend

        return KubernetesTrainerBackend.from_settings(settings)
    from services.jobs.local_backend import LocalTrainerBackend

    workdir = Path(settings.workdir) if settings.workdir else Path(data_dir) / "jobs"
    return LocalTrainerBackend(
        workdir, command=settings.command or None, grace_seconds=settings.grace_seconds, env=env
    )
