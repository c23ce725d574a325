"""SearchConfig: every knob of ASTRO's MCTS over reasoning steps, with presets.

`paper` follows the reimplementations of the paper (k=8 children, M=16 rollouts, 32
iterations, depth 50) with rStar-Math's c=2 and temperature 0.7; `tiny` runs in seconds on
CPU with the tiny model. Field descriptions double as documentation and CLI help.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from astro_core.config import ConfigError, deep_merge, format_validation_error, read_yaml_mapping
from astro_core.prompts import STEP_DELIMITER


class SearchConfig(BaseModel):
    """MCTS over reasoning steps (defaults = the `paper` preset)."""

    model_config = ConfigDict(extra="forbid")

    c_puct: float = Field(
        2.0, ge=0, allow_inf_nan=False, description="Exploration weight c in PUCT."
    )
    k: int = Field(8, ge=1, le=64, description="Children sampled per expansion.")
    rollouts: int = Field(
        16, ge=1, le=128, description="M: rollouts to a final answer that value each new node."
    )
    # Upper bounds keep a request from asking for endless work; they are far above any
    # published setting (the paper's reimplementations: 32 iterations, depth 50).
    iterations: int = Field(32, ge=1, le=10_000, description="Selections (and backups) per tree.")
    max_depth: int = Field(50, ge=1, le=10_000, description="A step at this depth is terminal.")
    max_step_tokens: int = Field(256, ge=1, le=131_072, description="Token limit of one step.")
    max_solution_tokens: int = Field(
        4096,
        ge=1,
        le=1_048_576,
        description="Token limit of a whole solution; a step reaching it is terminal.",
    )
    temperature: float = Field(
        0.7, ge=0, allow_inf_nan=False, description="Sampling temperature (0 = greedy)."
    )
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(
        0, ge=0, le=2**62, description="Base sampling seed (null: nondeterministic)."
    )
    # A stop string: generators refuse longer ones (the generator's max_stop_chars, 256).
    step_delimiter: str = Field(
        STEP_DELIMITER,
        min_length=1,
        max_length=256,
        description="Text that ends a step (a blank line).",
    )
    # Bounded so that losses of a round's selections stay finite: an infinite N makes PUCT
    # inf * 0 = NaN at c_puct 0, and no child can be chosen.
    virtual_loss: float = Field(
        1.0,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="Losses a pending selection adds to each node on its path.",
    )
    parallel_selections: int = Field(
        1, ge=1, le=64, description="Selections per tree per round, each at a distinct leaf."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # `k: true` in YAML would otherwise be k=1 (a bool is an int to pydantic).
        if isinstance(value, bool):
            raise ValueError("a boolean is not a valid value here")
        return value

    @model_validator(mode="after")
    def _step_fits_solution(self) -> SearchConfig:
        if self.max_step_tokens > self.max_solution_tokens:
            raise ValueError("max_step_tokens must not exceed max_solution_tokens")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny": {
        "k": 2,
        "rollouts": 2,
        "iterations": 3,
        "max_depth": 4,
        "max_step_tokens": 8,
        "max_solution_tokens": 40,
        "temperature": 1.0,
        "top_p": 1.0,
        "parallel_selections": 2,
    },
}


def load_search_config(
    preset: str = "paper",
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SearchConfig:
    """preset < YAML file < overrides. Errors (ConfigError) name the field at fault."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    data = dict(PRESETS[preset])
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(path))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        source = str(path) if path is not None else None
        raise ConfigError(format_validation_error(exc, source=source)) from exc
