"""Math problems and their JSONL files (MATH-500, AMC23, AIME24, MATH train as shipped)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """A problem statement with its gold answer."""

    id: str
    problem: str
    answer: str
    metadata: dict[str, str] = field(default_factory=dict)


def answer_to_text(value: Any) -> str:
    """Gold answers come as strings or JSON numbers (AMC23 stores 27.0): render integers plainly."""
    if isinstance(value, bool):
        raise ValueError("an answer cannot be a boolean")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def problem_from_row(row: dict[str, Any], index: int, source: str = "") -> Problem:
    """Build a Problem from one JSONL row with `problem` and `answer` fields."""
    where = f"{source}:{index + 1}" if source else f"row {index + 1}"
    text = row.get("problem")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: field 'problem' is missing or empty")
    if "answer" not in row or row["answer"] is None:
        raise ValueError(f"{where}: field 'answer' is missing")
    pid = row.get("unique_id", row.get("id", row.get("problem_id", index)))
    meta = {
        k: str(v)
        for k, v in row.items()
        if k not in {"problem", "answer", "solution", "question"}
        and isinstance(v, str | int | float)
    }
    return Problem(id=str(pid), problem=text, answer=answer_to_text(row["answer"]), metadata=meta)


def iter_problems(path: str | Path, limit: int | None = None) -> Iterator[Problem]:
    """Yield problems from a JSONL file; errors name the file and line."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        yield from problems_from_lines(handle, str(path), limit)


def problems_from_lines(
    lines: Iterable[str], source: str, limit: int | None = None
) -> Iterator[Problem]:
    """Yield problems from JSONL lines; errors name `source` and the line."""
    count = 0
    for index, line in enumerate(lines):
        if limit is not None and count >= limit:
            return
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{index + 1}: not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{source}:{index + 1}: expected a JSON object")
        yield problem_from_row(row, index, source)
        count += 1


def load_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    return list(iter_problems(path, limit))
