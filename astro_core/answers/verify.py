"""Check one response against one gold answer: extract, parse, compare, map to a reward.

`check` is pure and single-item; it runs inside the worker processes of `pool.VerifierPool`,
which adds the hard time limit. Calling it directly is fine for trusted inputs (tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from astro_core.answers.compare import answers_equal
from astro_core.answers.config import VerifierConfig
from astro_core.answers.extract import extract_answer, extract_gold
from astro_core.answers.fast import quick_verdict
from astro_core.answers.parse import decimal_commas, option_letter, parse_answer
from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult

_PERCENT_PROBLEM = re.compile(r"percent|%", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    """What a worker returns for one item (the reward is applied by the caller)."""

    correct: bool
    extracted: str
    reason: str  # "equal", "not equal", "no answer", "timeout", "error: ..."


def clean_text(text: str) -> str:
    """NUL bytes dropped, lone surrogates (from non-UTF-8 input) replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def check(item: VerifyItem, config: VerifierConfig | None = None) -> Verdict:
    """Verdict on one item. Never raises for bad input: errors become reasons."""
    config = config or VerifierConfig()
    gold = clean_text(item.gold).strip()
    if not gold:
        return Verdict(False, "", "error: empty gold answer")
    if len(gold) > config.max_gold_chars:
        return Verdict(False, "", f"error: gold answer longer than {config.max_gold_chars} chars")
    # The answer is at the end of a response, so a capped response keeps its tail.
    response = clean_text(item.response[-config.max_response_chars :])
    extraction = extract_answer(response, config.fallback)
    if not extraction.answer:
        return Verdict(False, "", "no answer")
    percent_problem = bool(_PERCENT_PROBLEM.search(item.problem))
    # "1,22" next to "1.22" is a decimal comma, else a list; "Plane" names option "(C) Plane"
    gold_text, answer = decimal_commas(extract_gold(gold).answer, extraction.answer)
    answer = option_letter(item.problem, gold_text, answer) or answer
    try:
        quick = quick_verdict(
            gold_text,
            answer,
            percent_problem=percent_problem,
            float_places=config.float_places,
        )
        if quick is not None:  # plain numbers, letters, identical text: no parser needed
            return Verdict(quick, extraction.answer, "equal" if quick else "not equal")
        gold_answer = parse_answer(gold_text)
        pred_answer = parse_answer(answer)
        equal = answers_equal(
            gold_answer,
            pred_answer,
            percent_problem=percent_problem,
            relation_for_set=config.relation_for_set,
            strict_variables=config.strict_variables,
            float_places=config.float_places,
        )
    except (RecursionError, MemoryError) as exc:
        return Verdict(False, extraction.answer, f"error: {type(exc).__name__}")
    except Exception as exc:  # sympy can fail in many ways on odd input: not equal
        return Verdict(False, extraction.answer, f"error: {type(exc).__name__}: {exc}"[:300])
    return Verdict(equal, extraction.answer, "equal" if equal else "not equal")


def to_result(verdict: Verdict, rewards: RewardMapping) -> VerifyResult:
    reward = rewards.correct if verdict.correct else rewards.incorrect
    return VerifyResult(verdict.correct, reward, verdict.extracted, verdict.reason)


def is_equivalent(gold: str, answer: str) -> bool:
    """Are two bare answers the same (no extraction from a response)? For tests and tools."""
    gold, answer = decimal_commas(gold, answer)
    return answers_equal(parse_answer(gold), parse_answer(answer))
