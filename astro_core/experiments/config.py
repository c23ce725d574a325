"""ExperimentConfig: the ASTRO-vs-Direct experiment, as `astro experiment --config` reads it.

    name: product-cpu
    seeds: [0, 1, 2]                 # one run per seed; everything random follows the seed
    base_model: ""                   # empty: warm-start a family model per seed (warm_start)
    warm_start: {preset: tiny}       # WarmStartConfig fields (astro_core/models/warm_start.py)
    train_problems: 24               # problems searched per seed (train split, drawn by seed)
    heldout_problems: 0              # evaluation: the held-out split (0: all of it)
    stages: [search, clone, sft, grpo, eval]
    sections:                        # the RunSpec's config: one section per stage
      search: {preset: tiny, iterations: 4}
      sft: {preset: cpu, max_steps: 60}
      ...

Both arms of a run share every section (the direct arm trains with the sft and grpo sections),
so they get the same settings and seeds by construction. Presets live in `presets/*.yaml`:
`mini` (seconds, for the test suite), `cpu` (2 CPU cores, several seeds, under 30 minutes),
`gpu` (a real model on MATH with the paper's settings; see docs/experiments.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from astro_core.config import ConfigError, deep_merge, format_validation_error, read_yaml_mapping

PRESETS_DIR = Path(__file__).parent / "presets"
# Stages the experiment cannot do without: two trained arms evaluated.
REQUIRED_STAGES = ("sft", "grpo", "eval")
# Sections whose `seed` the run's seed goes into (when the stage runs).
SEEDED_SECTIONS = ("search", "clone", "sft", "select_prompts", "grpo", "eval")


class ExperimentConfig(BaseModel):
    """ASTRO vs Direct-CoT: the same trees, two trace styles, several seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("astro-vs-direct", max_length=200, description="Label of the experiment.")
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=64,
        description="One run per seed; the seed draws the problems and seeds every stage.",
    )
    base_model: str = Field(
        "",
        description="Starting model directory (the same for every seed); empty: warm-start a "
        "synthetic-family model per seed with `warm_start`.",
    )
    warm_start: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "tiny"},
        description="WarmStartConfig fields (a `preset` may be named); its seed follows the run.",
    )
    warm_start_per_seed: bool = Field(
        True,
        description="Warm-start one model per seed (its initialisation follows the seed); "
        "false: one model, warm-started with the first seed, shared by every seed.",
    )
    family: str = Field("product", description="Synthetic family of the problems.")
    train_problems: int = Field(
        24, ge=1, description="Problems searched per seed: the train split, drawn with the seed."
    )
    heldout_problems: int = Field(
        0, ge=0, description="Held-out problems evaluated (the same for every seed); 0: all."
    )
    problems_path: str = Field(
        "", description="Problems to search instead of the family (e.g. math_train)."
    )
    eval_benchmarks: list[str] = Field(
        default_factory=list,
        description="Evaluation sets instead of the family's held-out split (e.g. math500).",
    )
    stages: list[str] = Field(
        default_factory=lambda: ["search", "clone", "sft", "grpo", "eval"],
        description="The RunSpec's stages; must include sft, grpo and eval.",
    )
    sections: dict[str, Any] = Field(
        default_factory=dict, description="The RunSpec's config: one section per stage."
    )
    trainer_backend: str = Field("", description="local | kubernetes; empty: the coordinator's.")
    run_timeout_seconds: float = Field(3600.0, gt=0, description="Longest one seed's run may take.")

    @field_validator("stages")
    @classmethod
    def _has_required_stages(cls, stages: list[str]) -> list[str]:
        missing = [s for s in REQUIRED_STAGES if s not in stages]
        if missing:
            raise ValueError(f"must include {', '.join(missing)} (the experiment compares arms)")
        return stages

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be >= 0")
        return seeds


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}")
    return read_yaml_mapping(path)


def load_experiment_config(
    path: str | Path | None = None, preset: str | None = None
) -> ExperimentConfig:
    """The preset's fields (if any) with the file's over them; ConfigError naming the field."""
    if path is None and preset is None:
        raise ConfigError("give a config file or a preset")
    data = load_preset(preset) if preset else {}
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(path))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source=str(path) if path else f"preset {preset}")
        ) from exc
