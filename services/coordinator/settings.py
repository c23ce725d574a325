"""The coordinator's own settings: `settings:` in its ServiceConfig YAML."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.jobs.backend import TrainerBackendSettings


class CoordinatorSettings(BaseModel):
    # other parts of the coordinator (Runs) keep their own keys in the same mapping
    model_config = ConfigDict(extra="ignore")

    generator_address: str = Field("127.0.0.1:50052", description="Generator service address.")
    verifier_address: str = Field("127.0.0.1:50053", description="Verifier service address.")
    worker: bool = Field(True, description="Run search tasks in this replica (not just the API).")
    max_active_trees: int = Field(
        64, ge=1, description="Trees one replica searches at once (batched together)."
    )
    reclaim_idle_seconds: float = Field(
        30.0, gt=0, description="A task idle this long (its replica died) is taken over."
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often a replica refreshes the tasks it holds."
    )
    poll_seconds: float = Field(0.5, gt=0, description="Wait for new tasks when idle.")
    default_preset: str = Field("paper", description="Preset when StartSearch names none.")
    generate_timeout_seconds: float = Field(
        600.0, gt=0, description="Deadline of one Generate / VerifyBatch call."
    )
    dataset_roots: list[str] | None = Field(
        None,
        description="Folders a StartSearch dataset_path may name (after resolving symlinks); "
        "a relative path is taken from the first. Null: the service's data directory; []: "
        "inline problems only. Add benchmark folders (e.g. a mounted /data) here.",
    )
    max_dataset_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest dataset file StartSearch reads."
    )
    max_problems: int = Field(
        100_000, ge=1, description="Most problems one search holds (inline or from a dataset)."
    )
    setup_retries: int = Field(
        3,
        ge=0,
        description="Times a search whose setup (model load, chat template) fails with a "
        "retryable error (UNAVAILABLE, a timeout) is retried before it fails.",
    )
    backends: str | None = Field(
        None,
        description="'module:function' returning Backends (generator, verifier, template) "
        "instead of the gRPC clients; for embedding and tests.",
    )
    # ---- runs (services/coordinator/runs) ----
    registry_address: str = Field(
        "", description="Checkpoint registry HOST:PORT: named base models, trained checkpoints."
    )
    run_roots: list[str] | None = Field(
        None,
        description="Folders a RunSpec output_uri may name; a run without one writes to "
        "<first>/<run id>. Null: <data dir>/runs. In a cluster, a volume the trainer Jobs "
        "mount at the same path.",
    )
    benchmark_dir: str = Field(
        "",
        description="Folder of the named datasets (math500.jsonl, math_train.jsonl, ...); "
        "empty: $ASTRO_SHARED_DATA, else ../shared/data beside the code.",
    )
    max_concurrent_runs: int = Field(
        2, ge=1, le=64, description="Runs one replica drives at once (each a thread)."
    )
    max_unfinished_runs: int = Field(
        1000,
        ge=1,
        description="StartRun refuses (RESOURCE_EXHAUSTED) while this many runs are queued or "
        "running, over all replicas.",
    )
    stage_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Times a stage that failed with a transient error (a service "
        "unreachable, a timeout) is started again before the run fails.",
    )
    stage_retry_seconds: float = Field(
        10.0, ge=0, le=3600, description="Wait before a stage is started again."
    )
    run_events_maxlen: int = Field(
        10_000, ge=100, le=10_000_000, description="Events kept per run (WatchRun replays them)."
    )
    trainer: TrainerBackendSettings = Field(
        default_factory=TrainerBackendSettings,
        description="Where trainer jobs run: local child processes or Kubernetes Jobs.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_reclaim(self) -> CoordinatorSettings:
        # A replica refreshes its tasks every heartbeat; if that is not well within the
        # reclaim time, live replicas take each other's tasks (and runs) back and forth.
        if self.heartbeat_seconds * 2 > self.reclaim_idle_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be at most half of "
                f"reclaim_idle_seconds ({self.reclaim_idle_seconds})"
            )
        return self
