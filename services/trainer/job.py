"""TrainJobSpec <-> stage config: what a Kubernetes Job (or `astro up`) hands a trainer.

A Job runs `astro train <stage> --config /etc/astro/train/config.yaml`; that file is
`job_config_yaml(spec)`: the spec's `config_yaml` (SFTConfig / GRPOConfig fields) with the
spec's own fields written over it, validated. So a file and a spec can never disagree.

    spec.base_model    -> model (path, or NAME:VERSION / NAME@ALIAS / NAME)
    spec.dataset_uri   -> dataset            spec.output_name       -> output_name
    spec.output_dir    -> output_dir         spec.run_id            -> run_id
    spec.*_address     -> *_address          (each only when set in the spec)

Without an output_dir anywhere, a job of a run writes under
`$ASTRO_DATA_DIR/runs/<run_id>/<stage>`.
"""

from __future__ import annotations

from typing import Any

import yaml

from astro_core.checkpoints.artifacts import join_url
from astro_core.config import ConfigError
from astro_core.paths import data_dir
from astro_core.training.config import TrainerConfig, config_to_yaml
from astro_core.training.job import check_stage_name, config_from_mapping
from services.protos.astro.v1 import common_pb2, trainer_pb2


def model_reference(ref: common_pb2.ModelRef) -> str:
    """A ModelRef as the `model` string of a config."""
    if ref.path:
        return ref.path
    if not ref.name:
        return ""
    if ref.version:
        return f"{ref.name}:{ref.version}"
    if ref.alias:
        return f"{ref.name}@{ref.alias}"
    return ref.name


def model_ref_message(model: str) -> common_pb2.ModelRef:
    """The inverse of model_reference for a config's `model` string."""
    from astro_core.checkpoints import parse_ref
    from astro_core.training.models import is_registry_ref

    if not is_registry_ref(model):
        return common_pb2.ModelRef(path=model)
    name, version, alias = parse_ref(model)
    if "@" not in model:
        alias = ""  # a bare name means its latest version, as an empty alias does
    return common_pb2.ModelRef(name=name, version=version, alias=alias)


def config_from_job_spec(spec: trainer_pb2.TrainJobSpec) -> TrainerConfig:
    """The validated stage config a spec stands for; ConfigError names what is wrong."""
    stage = check_stage_name(spec.stage)
    try:
        data = yaml.safe_load(spec.config_yaml) if spec.config_yaml.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"TrainJobSpec.config_yaml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("TrainJobSpec.config_yaml must hold a mapping of config fields")
    fields: dict[str, Any] = {
        "model": model_reference(spec.base_model),
        "dataset": spec.dataset_uri,
        "output_dir": spec.output_dir,
        "output_name": spec.output_name,
        "run_id": spec.run_id,
        "generator_address": spec.generator_address,
        "verifier_address": spec.verifier_address,
        "registry_address": spec.registry_address,
    }
    data.update({key: value for key, value in fields.items() if value})
    if not data.get("output_dir") and data.get("run_id"):
        data["output_dir"] = join_url(str(data_dir()), "runs", str(data["run_id"]), stage)
    return config_from_mapping(stage, data)


def job_config_yaml(spec: trainer_pb2.TrainJobSpec) -> str:
    """The config file a Job mounts for `astro train <stage> --config FILE`."""
    return config_to_yaml(config_from_job_spec(spec))


def job_spec_from_config(config: TrainerConfig) -> trainer_pb2.TrainJobSpec:
    """A spec carrying `config` whole (config_from_job_spec gives it back)."""
    return trainer_pb2.TrainJobSpec(
        run_id=config.run_id,
        stage=config.stage,
        base_model=model_ref_message(config.model),
        dataset_uri=config.dataset,
        config_yaml=config_to_yaml(config),
        output_name=config.output_name,
        generator_address=config.generator_address,
        verifier_address=config.verifier_address,
        registry_address=config.registry_address,
        output_dir=config.output_dir,
    )
