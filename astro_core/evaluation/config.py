"""The evaluation protocol as one pydantic model (YAML-loadable, field descriptions = CLI help).

Defaults are the paper's protocol: pass@1 as the average over n=16 samples per problem
(avg@16) at temperature 0.6 and top-p 0.95, with long completions; maj@n and pass@k are
reported beside it. Presets live in `presets/` (`paper.yaml`, `cpu.yaml`); load one with
`astro_core.config.load_config(EvalConfig, path)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from astro_core.cloning.phrases import Phrases
from astro_core.prompts import SOLVE_INSTRUCTION

PRESETS_DIR = Path(__file__).parent / "presets"
MAX_TOKENS_LIMIT = 32768
Arm = Literal["", "base", "sft", "rl", "direct_sft", "direct_rl"]


class ProblemFields(BaseModel):
    """Which fields of a problems JSONL hold what (the shared benchmark files use the defaults)."""

    problem: str = Field("problem", min_length=1, description="Field with the problem text.")
    answer: str = Field("answer", min_length=1, description="Field with the gold answer.")
    id: str = Field(
        "",
        description="Field with a unique problem id; empty: unique_id, id or problem_id, "
        "else the line number.",
    )
    subject: str = Field("subject", description="Field with the subject (breakdown); optional.")
    level: str = Field("level", description="Field with the difficulty level (breakdown).")


class EvalConfig(BaseModel):
    """What to evaluate and how: benchmarks, sampling protocol, metrics, batching."""

    benchmarks: list[str] = Field(
        default_factory=lambda: ["math500", "amc23", "aime24"],
        min_length=1,
        description="Benchmark names (math500, amc23, aime24) or paths of problems JSONL files.",
    )
    shared_data: str = Field(
        "",
        description="Folder of the benchmark files; empty: $ASTRO_SHARED_DATA, else "
        "../shared/data beside the repository.",
    )
    fields: ProblemFields = Field(
        default_factory=ProblemFields, description="Field names of a problems JSONL file."
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems.")
    n: int = Field(16, ge=1, le=1024, description="Samples per problem (avg@n is pass@1).")
    temperature: float = Field(0.6, ge=0, le=10, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    greedy: bool = Field(
        False, description="Greedy decoding: one sample per problem at temperature 0."
    )
    max_tokens: int = Field(
        MAX_TOKENS_LIMIT,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description="Most tokens generated per sample (the engine also caps it by the "
        "model's context).",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Base seed; each problem's seed derives from it."
    )
    pass_k: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16],
        description="k values of pass@k (those above n are dropped; pass@n is always given).",
    )
    batch_problems: int = Field(
        16,
        ge=1,
        le=4096,
        description="Problems generated together in one round (one engine batch, or "
        "concurrent generator calls); finished rounds are saved.",
    )
    request_timeout_seconds: float = Field(
        3600.0, gt=0, description="Longest wait for one problem's samples from a generator."
    )
    phrases: Phrases = Field(
        default_factory=Phrases,
        description="Phrases and paraphrase patterns that count reflections and backtracks.",
    )

    @model_validator(mode="after")
    def _greedy_is_one_sample_at_zero(self) -> EvalConfig:
        if self.greedy:
            self.n, self.temperature, self.top_p = 1, 0.0, 1.0
        if any(k < 1 for k in self.pass_k):
            raise ValueError("pass_k values must be >= 1")
        return self

    def ks(self) -> list[int]:
        """The k of pass@k that are reported: the configured ones up to n, and n."""
        return sorted({k for k in self.pass_k if k <= self.n} | {self.n})

    def protocol(self) -> dict[str, Any]:
        """Everything that decides the samples and the scores; written into every output."""
        return {
            "metric": f"pass@1 as avg@{self.n} (mean over {self.n} samples per problem)",
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "greedy": self.greedy,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "pass_k": self.ks(),
            "majority": f"maj@{self.n}",
            "prompt": "chat template, user turn: problem + blank line + instruction",
            "instruction": SOLVE_INSTRUCTION,
        }


class EvaluatedModel(BaseModel):
    """Which checkpoint an evaluation is of, for reports that compare several."""

    label: str = Field("", description="Name in reports (e.g. 'rl step 200'); default: dir name.")
    arm: Arm = Field("", description="base, sft, rl, direct_sft or direct_rl; empty: unknown.")
    step: int | None = Field(None, ge=0, description="RL step of the checkpoint, if any.")
    source: str = Field("", description="Where the model came from (path, reference, address).")


# The protocol fields that must agree for samples to be pooled or compared.
SAMPLING_KEYS = ("n", "temperature", "top_p", "greedy", "max_tokens", "seed", "instruction")
