"""What every trainer config carries (`TrainerConfig`) and how a config is loaded.

A stage's config (`SFTConfig`, `GRPOConfig`) subclasses `TrainerConfig`, which holds the job
fields a Kubernetes Job or `astro train` fills in (model, dataset, output, run id, service
addresses, DeepSpeed, LoRA) and the optimisation fields both algorithms share. Field names
follow TRL's TrainingArguments where they mean the same thing; descriptions double as CLI help.

    config = load_train_config(SFTConfig, "sft.yaml", preset="cpu",
                               overrides=parse_set_options(["deepspeed.zero_stage=2"]))

Precedence: class defaults (the paper's values) < preset YAML < config file < overrides (CLI
flags). Presets are YAML files in `presets/`, named `<stage>-<preset>.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from astro_core.checkpoints import check_name
from astro_core.config import ConfigError, deep_merge, format_validation_error, read_yaml_mapping

PRESETS_DIR = Path(__file__).parent / "presets"
ConfigT = TypeVar("ConfigT", bound="TrainerConfig")


class DeepSpeedSettings(BaseModel):
    """How DeepSpeed shards and runs the model."""

    model_config = ConfigDict(extra="forbid")

    zero_stage: int = Field(
        0,
        ge=0,
        le=3,
        description="ZeRO stage: 0 plain data parallel, 1 shard optimizer states, 2 also "
        "gradients, 3 also parameters.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: nccl on CUDA, gloo on CPU."
    )
    timeout_seconds: int = Field(
        1800, ge=10, description="Collective-operation timeout; a hung rank fails after this."
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed config keys merged over the generated config (advanced).",
    )


class LoraSettings(BaseModel):
    """LoRA adapters (peft); checkpoints hold the merged full weights."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=4096, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: updates scale by alpha/r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        min_length=1,
        description="Names of the Linear layers that get adapters.",
    )


class TrainerConfig(BaseModel):
    """Job fields and shared optimisation fields of every training stage."""

    model_config = ConfigDict(extra="forbid")

    # The stage name this config class trains ("sft", "grpo"); set by each subclass.
    stage: ClassVar[str] = ""

    # -- the job ---------------------------------------------------------------------------
    model: str = Field(
        ...,
        min_length=1,
        description="Starting model: a Hugging Face model directory, or a registered "
        "checkpoint NAME:VERSION / NAME@ALIAS.",
    )
    dataset: str = Field(..., min_length=1, description="Training data (JSONL path).")
    output_dir: str = Field(
        ...,
        min_length=1,
        description="Where checkpoints and the log go; restarting with the same output_dir "
        "resumes from its last checkpoint.",
    )
    output_name: str = Field(
        "", description="Registry name for the checkpoints (empty: save without registering)."
    )
    output_aliases: list[str] = Field(
        default_factory=list,
        description="Aliases moved to every registered checkpoint ('latest' always moves).",
    )
    run_id: str = Field(
        "", description="Pipeline run this job belongs to; progress goes to its Redis stream."
    )
    registry_address: str = Field(
        "",
        description="Checkpoint registry: HOST:PORT of the registry service, or a directory "
        "(absolute path or file:// URL) for a server-less local store.",
    )
    generator_address: str = Field("", description="Generator service HOST:PORT (GRPO).")
    verifier_address: str = Field("", description="Verifier service HOST:PORT (GRPO).")
    redis_url: str = Field(
        "", description="Redis for progress events (empty: $REDIS_URL; none: no events)."
    )
    deepspeed: DeepSpeedSettings = Field(
        default_factory=DeepSpeedSettings, description="DeepSpeed settings."
    )
    lora: LoraSettings | None = Field(None, description="LoRA adapters; null: full fine-tune.")

    # -- optimisation (TRL names) ----------------------------------------------------------
    learning_rate: float = Field(3e-6, gt=0, le=1, description="Peak learning rate of AdamW.")
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Decay after warmup: cosine to 0, linear to 0, or constant."
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the steps spent warming up linearly from 0."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(
        1.0, ge=0, description="Clip the global gradient norm to this (0: no clipping)."
    )
    per_device_train_batch_size: int = Field(
        1, ge=1, le=65536, description="Sequences per micro-batch on each rank."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=65536, description="Micro-batches accumulated per optimizer step."
    )
    num_train_epochs: float = Field(
        1.0, gt=0, le=10000, description="Passes over the data (fractions allowed)."
    )
    max_steps: int = Field(
        -1, ge=-1, description="Optimizer steps to run; -1: as many as num_train_epochs gives."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    bf16: bool | None = Field(
        None, description="bfloat16 training; null: on with CUDA, off (fp32) on CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; null: the model's default (sdpa)."
    )
    save_steps: int = Field(
        500,
        ge=0,
        description="Save (and register) a checkpoint every this many steps; 0: only at the end.",
    )
    save_total_limit: int | None = Field(
        None, ge=1, description="Keep at most this many local checkpoints (null: all)."
    )
    logging_steps: int = Field(1, ge=1, description="Log metrics every this many steps.")
    seed: int = Field(42, ge=0, description="Seed of data order, initialisation and sampling.")

    @field_validator("max_steps")
    @classmethod
    def _steps_or_minus_one(cls, value: int) -> int:
        if value == 0:
            raise ValueError("max_steps must be positive, or -1 to train num_train_epochs")
        return value

    @field_validator("output_name")
    @classmethod
    def _valid_output_name(cls, value: str) -> str:
        return check_name(value, "output_name") if value else value

    @field_validator("output_aliases")
    @classmethod
    def _valid_aliases(cls, value: list[str]) -> list[str]:
        return [check_name(alias, "alias") for alias in value]


def preset_path(stage: str, preset: str) -> Path:
    """`presets/<stage>-<preset>.yaml`; ConfigError naming the presets that exist."""
    path = PRESETS_DIR / f"{stage}-{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem.split("-", 1)[1] for p in PRESETS_DIR.glob(f"{stage}-*.yaml"))
        raise ConfigError(
            f"unknown {stage} preset {preset!r}; choose from {', '.join(known) or 'none'}"
        )
    return path


def load_train_config(
    model: type[ConfigT],
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ConfigT:
    """defaults < preset < YAML file < overrides; a ConfigError names each bad field."""
    data: dict[str, Any] = {}
    if preset:
        data = read_yaml_mapping(preset_path(model.stage, preset))
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(path))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source=str(path) if path is not None else None)
        ) from exc


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """`["deepspeed.zero_stage=2", "lora.r=8"]` -> nested overrides; values are YAML."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects KEY=VALUE (dotted keys for nesting), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value is not valid YAML: {exc}") from exc
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is set to a value and a mapping")
            node = child
        node[parts[-1]] = value
    return result


def config_to_yaml(config: TrainerConfig) -> str:
    """The config as YAML that `load_train_config` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
