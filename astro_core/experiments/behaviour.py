"""Where a trained model goes back, over a run's eval files (the counting itself is
`astro_core.analysis.behaviours`), and what the product family's ASTRO traces teach.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from astro_core.analysis.behaviours import BacktrackConditions, merge


def read_answers(eval_inputs: Iterable[Path]) -> dict[str, str]:
    """Problem id -> gold answer, from the run's copies of its eval sets."""
    answers: dict[str, str] = {}
    for path in eval_inputs:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    answers[str(row["id"])] = str(row["answer"])
    return answers


def conditions_of(samples: Path, answers: Mapping[str, str]) -> BacktrackConditions:
    """The counts over one eval directory's samples.jsonl."""
    return merge(conditions_by_benchmark(samples, answers).values())


def conditions_by_benchmark(
    samples: Path, answers: Mapping[str, str]
) -> dict[str, BacktrackConditions]:
    """The counts over one eval directory's samples.jsonl, per benchmark, in one read."""
    counts: dict[str, BacktrackConditions] = {}
    with samples.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            sample = json.loads(line)
            gold = answers.get(str(sample["problem_id"]))
            if gold is not None:
                benchmark = str(sample.get("benchmark", ""))
                counts.setdefault(benchmark, BacktrackConditions()).add(
                    str(sample["response"]), gold, bool(sample["correct"])
                )
    return counts


# --- what the traces teach (the product family) ---------------------------------------------

PROBLEM = re.compile(r"x \* (\d+) = (\d+)")
TRY = re.compile(r"^Try x = (\d+): \d+ \* \d+ = (\d+)\b")


def verdict_contexts(traces: Path) -> dict[str, int]:
    """In ASTRO traces of the product family: each reflection's verdict (`back`: "not sure"
    and a backtrack; `ok`: "seems to be correct") against the attempt before it: does its
    stated product equal c, and is its arithmetic right? If search traces are to teach a
    check, the verdict must follow from the visible product; keys: `<verdict> <P==c|P!=c>
    <arithmetic ok|wrong>`."""
    counts: dict[str, int] = {}
    with traces.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            problem = PROBLEM.search(record["messages"][0]["content"])
            if problem is None or record.get("style") != "astro":
                continue
            b, c = int(problem.group(1)), int(problem.group(2))
            last: tuple[int, int] | None = None
            for paragraph in record["messages"][-1]["content"].split("\n\n"):
                paragraph = paragraph.strip()
                attempt = TRY.match(paragraph)
                if attempt:
                    last = (int(attempt.group(1)), int(attempt.group(2)))
                elif paragraph.startswith("But wait") and last is not None:
                    guess, stated = last
                    key = " ".join(
                        (
                            "back" if "not sure" in paragraph else "ok",
                            "P==c" if stated == c else "P!=c",
                            "arithmetic ok" if stated == guess * b else "arithmetic wrong",
                        )
                    )
                    counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
