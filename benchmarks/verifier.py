"""Verifier benchmark: agreement with labels and items/s, ours vs math-verify, one run.

Sets:
- equivalence: ../shared/data/answer_equivalence.jsonl (math-verify's own labelled cases).
  math-verify runs each row with the row's own configuration (precision, strict, ...), as its
  test suite does; ours runs every row with one configuration.
- math500: each MATH-500 gold paired with its reference solution (label: equal), with
  reformatted answers (final-answer sentence, \\dfrac, spaces, \\left( \\right)) (equal), and
  with perturbed answers (gold + 1) (not equal). math-verify runs with its defaults.

Throughput: all items of both sets; ours = `VerifierPool.check_batch` with `--workers`
processes (started before timing), math-verify = `verify(parse(gold), parse(pred))` called
directly in this process. Prints one table; the last line is `ratio: ours/peer items/s`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.answers.extract import last_boxed
from astro_core.protocols import VerifyItem

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Rows whose label is mathematically wrong or holds only under a non-default math-verify
# configuration (tests/verifier/test_equivalence.py explains each).
WRONG_LABELS = {187, 254, 264}


def equivalence_rows() -> list[dict[str, Any]]:
    lines = (DATA / "answer_equivalence.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


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
        ours = pool.check_batch(eq_items + m5_items)
        ours_seconds = time.perf_counter() - started
    ours_eq = [v.correct for v in ours[: len(eq_items)]]
    ours_m5 = [v.correct for v in ours[len(eq_items) :]]

    started = time.perf_counter()
    peer_eq = [peer_equivalence(r) for r in rows]
    peer_m5 = [peer_default(gold, pred) for gold, pred, _ in math500]
    peer_seconds = time.perf_counter() - started

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
            f"equivalence: labels {sorted(WRONG_LABELS)} corrected",
            agree(ours_eq, corrected),
            agree(peer_eq, corrected),
        ),
        ("math500 + variants: agreement", agree(ours_m5, labels_m5), agree(peer_m5, labels_m5)),
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
