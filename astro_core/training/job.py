"""One training job: which config and entry point a stage has, what it is given, what it returns.

    config = load_train_config(config_class("sft"), "sft.yaml")
    result = run_stage(config, TrainingServices(store=my_store))

Every stage's entry point has the signature `train_<stage>(config, services) -> TrainResult`.
Stages are named by import path so that a stage's modules (and torch, DeepSpeed) are only
imported when that stage runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from astro_core.checkpoints import CheckpointInfo, CheckpointStore
from astro_core.config import ConfigError
from astro_core.protocols import Generator, Verifier
from astro_core.training.config import TrainerConfig
from astro_core.training.train_log import ProgressSink

# stage -> ("module:ConfigClass", "module:entry_point")
STAGES: dict[str, tuple[str, str]] = {
    "sft": ("astro_core.training.sft_config:SFTConfig", "astro_core.training.sft:train_sft"),
    "grpo": ("astro_core.training.grpo_config:GRPOConfig", "astro_core.training.grpo:train_grpo"),
}


@dataclass
class TrainingServices:
    """The outside world a training job talks to, through astro_core's seams."""

    store: CheckpointStore | None = None  # registry refs as `model`, and registration
    generator: Generator | None = None  # GRPO rollouts
    verifier: Verifier | None = None  # GRPO rewards
    sinks: list[ProgressSink] = field(default_factory=list)  # progress (main rank)


@dataclass
class TrainResult:
    """What a finished job did."""

    stage: str
    output_dir: Path
    steps: int  # optimizer steps done in total (including before a resume)
    resumed_from: int  # step this process resumed from (0: a fresh start)
    metrics: dict[str, float]  # the last logged metrics
    checkpoints: list[Path] = field(default_factory=list)  # saved by this process
    registered: list[CheckpointInfo] = field(default_factory=list)  # registered by it
    summary: dict[str, Any] = field(default_factory=dict)  # stage-specific (data counts...)


def _load(target: str, stage: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(f"stage {stage!r} is not available in this build") from exc
    return getattr(module, attribute)


def check_stage_name(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; choose from {', '.join(STAGES)}")
    return stage


def config_class(stage: str) -> type[TrainerConfig]:
    """The config class of a stage ("sft" -> SFTConfig)."""
    return cast(type[TrainerConfig], _load(STAGES[check_stage_name(stage)][0], stage))


def stage_entry(stage: str) -> Callable[[Any, TrainingServices], TrainResult]:
    return cast(
        Callable[[Any, TrainingServices], TrainResult],
        _load(STAGES[check_stage_name(stage)][1], stage),
    )


def run_stage(config: TrainerConfig, services: TrainingServices | None = None) -> TrainResult:
    """Train the stage `config` is for."""
    return stage_entry(config.stage)(config, services or TrainingServices())


def config_from_mapping(stage: str, data: Mapping[str, Any]) -> TrainerConfig:
    """Validate a stage config given as a mapping (e.g. from a job spec)."""
    from pydantic import ValidationError

    from astro_core.config import format_validation_error

    try:
        return config_class(stage).model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=f"{stage} config")) from exc
