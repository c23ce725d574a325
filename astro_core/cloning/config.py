"""Configuration of procedure cloning: how many traces per tree, which terminals, which words.

Defaults are the paper's recipe (per problem one direct trace with k=0 and three search traces
with 1 <= k <= 2 wrong attempts before the correct one; self-evaluation by 8 votes). Presets
live next to this file in `presets/` (`paper.yaml`, `cpu.yaml`); load one with
`astro_core.config.load_config(CloningConfig, path)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from astro_core.cloning.phrases import Phrases

Style = Literal["astro", "direct"]
PRESETS_DIR = Path(__file__).parent / "presets"


class CloningConfig(BaseModel):
    """Procedure cloning (the paper's Algorithm 1 plus verbalization)."""

    k: int = Field(
        2, ge=1, description="Most wrong terminals a search trace visits before the correct one."
    )
    traces_per_problem: int = Field(
        3, ge=0, description="Search traces (1 <= k' <= k wrong attempts each) per problem."
    )
    direct_traces_per_problem: int = Field(
        1, ge=0, description="Traces with k=0 (straight to a correct terminal) per problem."
    )
    seed: int = Field(0, description="Seed of the sampling; each tree draws from (seed, id).")
    self_eval: bool = Field(
        True,
        description="Keep only correct terminals that pass a self-evaluation vote "
        "(needs a generator; off without one).",
    )
    self_eval_votes: int = Field(8, ge=1, description="Votes sampled per correct terminal.")
    self_eval_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Smallest share of 'yes' votes a terminal must get."
    )
    self_eval_temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of votes.")
    high_q_threshold: float = Field(
        0.9,
        description="An intermediate step with Q at least this gets a positive reflection.",
    )
    rewrite: Literal["keep", "llm", "family"] = Field(
        "keep",
        description="keep: steps verbatim; llm: the generator rewrites each step (few-shot); "
        "family: a synthetic family's try steps restate their checks exactly (others kept).",
    )
    rewrite_temperature: float = Field(0.7, ge=0.0, description="Temperature of LLM rewrites.")
    rewrite_max_tokens: int = Field(512, ge=1, description="Token limit of one LLM rewrite.")
    phrases: Phrases = Field(default_factory=Phrases, description="Every phrase written.")
