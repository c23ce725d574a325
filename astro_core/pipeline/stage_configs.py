"""Config classes of the run stages that have no package of their own: prompt selection (the
run calls astro_core.training.select_prompts with these settings) and the report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SelectPromptsConfig(BaseModel):
    """Keep the RL prompts of moderate difficulty: those the SFT policy solves sometimes.

    The paper trains GRPO on 8.7K "moderately difficult" prompts; it does not give the
    sampling, so these defaults are ours: 8 samples per prompt, kept when the pass rate lies
    strictly between 0 and 1 (a group with all rewards equal carries no GRPO signal)."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(8, ge=1, le=1024, description="Completions per prompt.")
    pass_rate_low: float = Field(
        0.0, ge=0, lt=1, description="Keep prompts whose pass rate is above this."
    )
    pass_rate_high: float = Field(
        1.0, gt=0, le=1, description="Keep prompts whose pass rate is below this."
    )
    max_completion_length: int = Field(
        8192, ge=1, le=1_048_576, description="Token budget of one completion."
    )
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, ge=0, le=2**62, description="Base seed of the sampling.")
    prompts_per_call: int = Field(
        16, ge=1, le=4096, description="Prompts sent to the generator in one call."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SelectPromptsConfig:
        if self.pass_rate_low >= self.pass_rate_high:
            raise ValueError("pass_rate_low must be below pass_rate_high")
        return self


class ReportConfig(BaseModel):
    """The run's report (astro_core.analysis.report.build_report)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field("ASTRO run report", max_length=200, description="Title of the report.")
    allow_mixed: bool = Field(
        False,
        description="Report evaluations of different sampling protocols side by side "
        "(the run's evaluations share one protocol, so this rarely matters).",
    )
