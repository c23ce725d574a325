"""The coordinator's own settings: `settings:` in its ServiceConfig YAML."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    backends: str | None = Field(
        None,
        description="'module:function' returning Backends (generator, verifier, template) "
        "instead of the gRPC clients; for embedding and tests.",
    )
    trainer: TrainerBackendSettings = Field(
        default_factory=TrainerBackendSettings,
        description="Where trainer jobs run: local child processes or Kubernetes Jobs.",
    )
