"""Trainer jobs: one spec, one Kubernetes Job builder, two backends.

- `spec.TrainJob`: a stage (sft | grpo) and the config `astro train <stage> --config` reads;
  `train_job_from_spec` makes one from a TrainJobSpec message.
- `values.load_chart_values`: the Helm chart's values (defaults + override files, checked with
  its schema) and the names the chart gives its objects.
- `builder.build_trainer_job`: TrainJob + chart values -> the batch/v1 Job; the coordinator
  creates it, `astro k8s job` prints it.
- `backend.TrainerBackend`: start / status / watch / wait / cancel; `trainer_backend(settings)`
  picks `local` (child processes, local_backend.py) or `kubernetes` (Jobs,
  kubernetes_backend.py) from the coordinator's `settings.trainer`.
"""

from services.jobs.backend import (
    JobConflict,
    JobHandle,
    JobStatus,
    TrainerBackend,
    TrainerBackendSettings,
    trainer_backend,
)
from services.jobs.builder import build_trainer_job
from services.jobs.spec import TrainJob, train_job_from_spec
from services.jobs.values import ChartValues, ChartValuesError, load_chart_values

__all__ = [
    "ChartValues",
    "ChartValuesError",
    "JobConflict",
    "JobHandle",
    "JobStatus",
    "TrainJob",
    "TrainerBackend",
    "TrainerBackendSettings",
    "build_trainer_job",
    "load_chart_values",
    "train_job_from_spec",
    "trainer_backend",
]
