"""Settings of the answer verifier (CLI flags and service settings use the same names)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from astro_core.answers.extract import Fallback
from astro_core.answers.fast import FLOAT_PLACES


class VerifierConfig(BaseModel):
    """How answers are extracted and how the worker pool runs."""

    workers: int = Field(2, ge=1, le=256, description="Worker processes checking answers.")
    timeout_seconds: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="Hard time limit per item; a stuck worker is killed.",
    )
    fallback: Fallback = Field(
        "last_math",
        description="Without a box or 'final answer is': last_math (last math span or "
        "number), latex (last one-line math span only), last_number or none.",
    )
    max_response_chars: int = Field(
        100_000, gt=0, description="Longer responses keep only their last characters."
    )
    max_gold_chars: int = Field(10_000, gt=0, description="Longer gold answers are an error.")
    relation_for_set: bool = Field(
        True,
        description="An inequality answer counts for the interval gold it describes "
        "(gold [-2,7], answer -2<=x<=7); false refuses it, as math-verify's default.",
    )
    strict_variables: bool = Field(
        True,
        description="Variable names matter (f(x) != f(y)); false pairs the variables of "
        "both answers in name order, as math-verify's strict=False.",
    )
    float_places: int = Field(
        FLOAT_PLACES,
        ge=1,
        le=15,
        description="A decimal written with at least this many places is a numeric evaluation "
        "and equals a value it agrees with to this many places (math-verify's float_rounding); "
        "shorter decimals are exact (0.33 is not 1/3).",
    )
