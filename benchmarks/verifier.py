"""Verifier benchmark: agreement with labels and items/s, ours vs math-verify, one run.

Sets:
- equivalence: ../shared/data/answer_equivalence.jsonl (math-verify's own labelled cases).
  math-verify runs each row with the row's own configuration (precision, strict, ...), as its
  test suite does. Ours runs each row with its equivalent settings (`row_settings`: precision
  is our float_places), and the
  table also shows ours with its defaults on every row.
- math500: each MATH-500 gold paired with its reference solution (label: equal), with
  reformatted answers (final-answer sentence, \\dfrac, spaces, \\left( \\right)) (equal), and
  with perturbed answers (gold + 1) (not equal). math-verify runs with its defaults.
- categories: the answer-category tables of tests/verifier/test_categories.py (rounded
  decimals, powers of ten, matrices, repeating decimals, the imaginary unit, ...), each answer
  boxed in a sentence; both run with their defaults. Agreement only (not timed).

Throughput: all items of both sets; ours = `VerifierPool.check_batch` with `--workers`
processes (started before timing), math-verify = `verify(parse(gold), parse(pred))` called
directly in this process. Prints one table; the last line is `ratio: ours/peer items/s`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from astro_core.answers import Verdict, VerifierConfig, VerifierPool
from astro_core.answers.extract import last_boxed
from astro_core.protocols import VerifyItem

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The row whose label is mathematically wrong (1 - 1/e vs 1 + 1/e labelled equal);
# tests/verifier/test_equivalence.py explains it.
WRONG_LABELS = {264}


def equivalence_rows() -> list[dict[str, Any]]:
    lines = (DATA / "answer_equivalence.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def row_settings(row: dict[str, Any]) -> tuple[str, bool, bool, int]:
    """Our settings equivalent to a row's math-verify configuration: (fallback,
    relation_for_set, strict_variables, float_places). Latex-only extraction takes no bare
    numbers."""
    types = row["match_types"]
    fallback = "latex" if isinstance(types, list) and "expr" not in types else "last_math"
    return (
        fallback,
        bool(row["allow_set_relation_comp"]),
        bool(row["strict"]),
        int(row["precision"]),
    )


def check_with_row_settings(pool: VerifierPool, rows: list[dict[str, Any]]) -> list[Verdict]:
    """One batch per distinct settings, verdicts back in row order."""
    groups: dict[tuple[str, bool, bool, int], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row_settings(row), []).append(i)
    verdicts: list[Verdict | None] = [None] * len(rows)
    for (fallback, relation_for_set, strict, float_places), indices in groups.items():
        settings = pool.config.model_copy(
            update={
                "fallback": fallback,
                "relation_for_set": relation_for_set,
                "strict_variables": strict,
                "float_places": float_places,
            }
        )
        batch = [VerifyItem(rows[i]["pred"], rows[i]["gold"]) for i in indices]
        for i, verdict in zip(indices, pool.check_batch(batch, settings), strict=True):
            verdicts[i] = verdict
    return [v for v in verdicts if v is not None]


def math500_items() -> list[tuple[str, str, bool]]:
    items = []
    for line in (DATA / "math500.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold = row["answer"]
        if last_boxed(row["solution"]) is not None:
            items.append((gold, row["solution"], True))
        items.append((gold, f"The final answer is ${gold}$. I hope it is correct.", True))
        reformatted = re.sub(r"\\frac", r"\\dfrac", gold).replace(",", ", ")
        reformatted = reformatted.replace("(", "\\left(").replace(")", "\\right)")
        items.append((gold, f"So we get $\\boxed{{ {reformatted} }}$.", True))
        wrong = str(int(gold) + 1) if gold.isdigit() else f"{gold} + 1"
        if gold.isdigit() or ("," not in gold and "=" not in gold and "\\text" not in gold):
            items.append((gold, f"$\\boxed{{{wrong}}}$", False))
    return items


def peer_equivalence(row: dict[str, Any]) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if row["harness"] == "parse_verify_defaults":
        return bool(verify(parse(row["gold"]), parse(row["pred"])))
    configs: list[Any] = []
    if "latex" in row["match_types"]:
        configs.append(LatexExtractionConfig(boxed_match_priority=0))
    if "expr" in row["match_types"]:
        configs.append(ExprExtractionConfig())
    gold, pred = parse(row["gold"], configs), parse(row["pred"], configs)
    return bool(
        verify(
            gold,
            pred,
            float_rounding=row["precision"],
            strict=row["strict"],
            allow_set_relation_comp=row["allow_set_relation_comp"],
        )
    )


def peer_default(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(pred)))


def category_items() -> list[tuple[str, str, bool]]:
    # The tables live in the test suite; `python benchmarks/verifier.py` puts benchmarks/,
    # not the repository, on sys.path.
    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tests.verifier.test_categories import TABLES

    return [
        (gold, f"So the answer is $\\boxed{{{answer}}}$.", equal)
        for table in TABLES.values()
        for gold, answer, equal in table
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    rows = equivalence_rows()
    math500 = math500_items()
    eq_items = [VerifyItem(r["pred"], r["gold"]) for r in rows]
    m5_items = [VerifyItem(pred, gold) for gold, pred, _ in math500]
    labels_eq = [bool(r["equal"]) for r in rows]
    labels_m5 = [label for _, _, label in math500]
    total = len(eq_items) + len(m5_items)

    with VerifierPool(VerifierConfig(workers=args.workers, timeout_seconds=args.timeout)) as pool:
        pool.check_batch([VerifyItem(r"\boxed{1}", "1")] * args.workers)  # workers warm
        started = time.perf_counter()
        ours_eq = [v.correct for v in check_with_row_settings(pool, rows)]
        ours_m5 = [v.correct for v in pool.check_batch(m5_items)]
        ours_seconds = time.perf_counter() - started
        ours_eq_defaults = [v.correct for v in pool.check_batch(eq_items)]  # not timed
        categories = category_items()
        ours_cat = [
            v.correct for v in pool.check_batch([VerifyItem(p, g) for g, p, _ in categories])
        ]

    started = time.perf_counter()
    peer_eq = [peer_equivalence(r) for r in rows]
    peer_m5 = [peer_default(gold, pred) for gold, pred, _ in math500]
    peer_seconds = time.perf_counter() - started
    peer_cat = [peer_default(gold, pred) for gold, pred, _ in categories]
    labels_cat = [label for _, _, label in categories]

    def agree(pred: list[bool], labels: list[bool]) -> str:
        hits = sum(p == t for p, t in zip(pred, labels, strict=True))
        return f"{hits}/{len(labels)} ({100 * hits / len(labels):.1f}%)"

    corrected = [(not lab) if i in WRONG_LABELS else lab for i, lab in enumerate(labels_eq)]
    ours_rate, peer_rate = total / ours_seconds, total / peer_seconds
    table = [
        ("metric", "astro verifier", "math-verify 0.9.0"),
        (
            "equivalence: agreement with labels",
            agree(ours_eq, labels_eq),
            agree(peer_eq, labels_eq),
        ),
        (
            "equivalence: ours with default settings",
            agree(ours_eq_defaults, labels_eq),
            "",
        ),
        (
            f"equivalence: labels {sorted(WRONG_LABELS)} corrected",
            agree(ours_eq, corrected),
            agree(peer_eq, corrected),
        ),
        ("math500 + variants: agreement", agree(ours_m5, labels_m5), agree(peer_m5, labels_m5)),
        ("categories: agreement", agree(ours_cat, labels_cat), agree(peer_cat, labels_cat)),
        (
            f"items/s ({total} items)",
            f"{ours_rate:.1f} ({args.workers} workers)",
            f"{peer_rate:.1f} (1 process)",
        ),
    ]
    width = [max(len(row[i]) for row in table) for i in range(3)]
    for n, row in enumerate(table):
        print(" | ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("-+-".join("-" * w for w in width))
    print(f"ratio: {ours_rate / peer_rate:.2f}")


if __name__ == "__main__":
    main()
