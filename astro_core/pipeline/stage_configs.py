"""The config class of the run's report stage (the other stages' classes live with their
algorithms: search, cloning, training, evaluation)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    """The run's report (astro_core.analysis.report.build_report)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field("ASTRO run report", max_length=200, description="Title of the report.")
    allow_mixed: bool = Field(
        False,
        description="Report evaluations of different sampling protocols side by side "
        "(the run's evaluations share one protocol, so this rarely matters).",
    )
