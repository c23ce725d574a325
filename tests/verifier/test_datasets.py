"""Every gold answer of MATH-500, AMC23 and AIME24 equals itself and its reference
solution's boxed answer; perturbed values do not. One batch through the pool."""

from __future__ import annotations

import json
from pathlib import Path

from astro_core.answers import VerifierPool
from astro_core.answers.extract import last_boxed
from astro_core.protocols import VerifyItem


def _gold(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # AMC golds are JSON floats: 27.0
    return str(value)


def _perturbed(gold: str) -> str | None:
    """A different answer: a changed integer, or the gold plus one."""
    if gold.lstrip("-").isdigit():
        return str(int(gold) + 1)
    return f"{gold} + 1" if "," not in gold and "=" not in gold and "\\text" not in gold else None


def test_golds_equal_themselves_and_reference_solutions(
    shared_data: Path, pool: VerifierPool
) -> None:
    items: list[VerifyItem] = []
    expected: list[bool] = []
    labels: list[str] = []
    for name in ("math500", "amc23", "aime24"):
        for row in map(json.loads, (shared_data / f"{name}.jsonl").read_text().splitlines()):
            gold = _gold(row["answer"])
            items.append(VerifyItem(f"The answer is $\\boxed{{{gold}}}$.", gold))
            expected.append(True)
            labels.append(f"{name} self {gold}")
            solution = row.get("solution") or ""
            if last_boxed(solution) is not None:  # AMC has no solutions, AIME some unboxed
                items.append(VerifyItem(solution, gold))
                expected.append(True)
                labels.append(f"{name} solution {gold}")
            wrong = _perturbed(gold)
            if wrong is not None:
                items.append(VerifyItem(f"\\boxed{{{wrong}}}", gold))
                expected.append(False)
                labels.append(f"{name} perturbed {gold} -> {wrong}")
    assert len(items) > 1400
    verdicts = pool.check_batch(items)
    wrong_verdicts = [
        (label, v) for label, v, e in zip(labels, verdicts, expected, strict=True) if v.correct != e
    ]
    assert wrong_verdicts == []
