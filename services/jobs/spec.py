"""What a trainer job runs: a stage and the config file `astro train <stage> --config` reads.

A `TrainJob` comes from a stage config file (`astro k8s job sft --config FILE`, the same file
`astro train sft --config FILE` takes) or from a `TrainJobSpec` message (what the coordinator
receives): its `config_yaml` merged with the job fields every trainer config carries —
`model`, `dataset`, `output_name`, `run_id` and the service addresses.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from astro_core.engines import ModelSource
from services.jobs.values import check_size

Stage = Literal["sft", "grpo"]
STAGES: tuple[Stage, ...] = ("sft", "grpo")

# Job fields of every trainer config (astro_core/training's shared base) that a spec sets.
JOB_FIELDS = (
    "model",
    "dataset",
    "output_dir",
    "output_name",
    "run_id",
    "generator_address",
    "verifier_address",
    "registry_address",
)
# A label value: the run id becomes the `astro.run` label of the Job and its pods.
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# Where a Kubernetes Job name must end so `<name>-<index>` is still a hostname (63).
JOB_NAME_MAX = 52


class TrainJob(BaseModel):
    """One trainer job: the stage, its complete config, where it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage = Field(description="sft or grpo: the `astro train` command it runs.")
    config: dict[str, Any] = Field(
        description="The stage's config as `astro train <stage> --config` reads it."
    )
    nodes: int | None = Field(
        None, ge=1, le=1024, description="Nodes (pods); default: the chart's trainer.nodes."
    )
    gpus_per_node: int | None = Field(
        None, ge=0, le=64, description="GPUs per node; default: the chart's trainer.gpus."
    )
    attempt: int = Field(
        0, ge=0, description="Restarts of the same run stage get new names: attempt 1, 2, ..."
    )

    @field_validator("config")
    @classmethod
    def _config_is_serialisable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config must hold plain YAML values: {exc}") from exc
        run_id = value.get("run_id", "")
        if not isinstance(run_id, str) or not LABEL_VALUE.match(run_id):
            raise ValueError(
                f"run_id {run_id!r} must be up to 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit (it becomes a label)"
            )
        return value

    @property
    def run_id(self) -> str:
        return str(self.config.get("run_id", ""))

    def digest(self) -> str:
        """A stable digest of everything the job runs, for names and for spotting a conflict."""
        canonical = json.dumps(
            {
                "stage": self.stage,
                "config": self.config,
                "nodes": self.nodes,
                "gpus": self.gpus_per_node,
                "attempt": self.attempt,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def name(self, prefix: str) -> str:
        """`<prefix>-<stage>-<run>`: the run id when it fits as is, else a shortened form with a
        hash; no run id: a hash of the config. At most JOB_NAME_MAX characters."""
        base = f"{prefix}-{self.stage}-"
        room = JOB_NAME_MAX - len(base)
        if room < 9:
            raise ValueError(f"name prefix {prefix!r} is too long for a Job name")
        if not self.run_id:
            return base + self.digest()[:8]
        run = re.sub(r"[^a-z0-9-]+", "-", self.run_id.lower()).strip("-")
        if self.attempt:
            run = f"{run}-a{self.attempt}"
        if run and run == self.run_id and len(run) <= room:
            return base + run
        tag = hashlib.sha256(f"{self.run_id}/{self.attempt}".encode()).hexdigest()[:6]
        head = run[: room - len(tag) - 1].strip("-")
        return base + (f"{head}-{tag}" if head else tag)

    def with_defaults(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The config with `defaults` filling job fields that are missing or empty."""
        config = dict(self.config)
        for key, value in defaults.items():
            if config.get(key) in (None, ""):
                config[key] = value
        return config


def check_stage_config(stage: str, config: Mapping[str, Any]) -> None:
    """Refuse, before anything starts, a config `astro train <stage>` would refuse (when the
    trainer package is installed: astro_core.training.job.config_class)."""
    try:
        from astro_core.training.job import config_class
    except ImportError:
        return
    from pydantic import ValidationError

    from astro_core.config import format_validation_error

    try:
        config_class(stage).model_validate(dict(config))
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, source=f"the {stage} config")) from exc


def load_stage_config(text: str, source: str = "config") -> dict[str, Any]:
    """A stage config YAML mapping (empty text: an empty mapping)."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping, not {type(data).__name__}")
    check_size(data, source)
    return data


def model_ref(name: str, version: int, alias: str, path: str) -> str:
    """A ModelRef as the string a trainer config's `model` takes: a path, `name:version` or
    `name@alias` (a bare name means its latest version)."""
    if not path and not name:
        return ""
    return ModelSource(path=path, name=name, version=version, alias=alias).describe()


def train_job_from_spec(spec: Any) -> TrainJob:
    """A TrainJobSpec message (astro.v1) as a TrainJob: config_yaml with the spec's job fields
    written over it (those it sets), as services/trainer/job.py reads a spec. An output_dir
    left empty is the backend's to choose (on the Job's workspace, or the local job dir)."""
    if spec.stage not in STAGES:
        raise ValueError(f"stage {spec.stage!r} is invalid: choose from {', '.join(STAGES)}")
    config = load_stage_config(spec.config_yaml, "config_yaml")
    base = spec.base_model
    fields = {
        "model": model_ref(base.name, base.version, base.alias, base.path),
        "dataset": spec.dataset_uri,
        "output_name": spec.output_name,
        # TrainJobSpec.output_dir (field 10) comes with the trainer's proto change
        "output_dir": getattr(spec, "output_dir", ""),
        "run_id": spec.run_id,
        "generator_address": spec.generator_address,
        "verifier_address": spec.verifier_address,
        "registry_address": spec.registry_address,
    }
    config.update({key: value for key, value in fields.items() if value})
    return TrainJob(stage=spec.stage, config=config)
