"""Benchmarks by name (math500, amc23, aime24) from the shared data folder, or any JSONL file.

The shared folder is `../shared/data` beside the repository unless `$ASTRO_SHARED_DATA` (or
a configured `shared_data` folder) names another. Its files (see SOURCES.md there) differ in
small ways that are handled here: AMC23 answers are JSON floats (27.0 becomes "27"), AIME24
answers keep their leading zeros ("025"; the verifier compares them as numbers), MATH-500
carries `subject` and `level` for the breakdown.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_core.evaluation.config import ProblemFields
from astro_core.problems import Problem, answer_to_text

BENCHMARK_FILES = {"math500": "math500.jsonl", "amc23": "amc23.jsonl", "aime24": "aime24.jsonl"}
DATA_ENV = "ASTRO_SHARED_DATA"
_AUTO_ID_FIELDS = ("unique_id", "id", "problem_id")
MAX_LINE_CHARS = 1_000_000  # one problem; a longer line is not a problem but a mistake


class UnknownBenchmark(ValueError):
    """Neither a known benchmark name nor an existing file."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path
    problems: list[Problem]


def shared_data_dir(configured: str | Path = "") -> Path:
    """`configured`, else $ASTRO_SHARED_DATA, else ../shared/data beside the repository."""
    if str(configured):
        return Path(configured).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def benchmark_path(
    spec: str, data_dir: str | Path = "", allow_files: bool = True
) -> tuple[str, Path]:
    """(name, file) of a benchmark name or a JSONL path; raises UnknownBenchmark.

    With allow_files=False (a service evaluating a spec sent by a client) only the files of
    the data folder are reachable: a known name, or the name of a .jsonl file in it.
    """
    folder = shared_data_dir(data_dir)
    if not allow_files and spec not in BENCHMARK_FILES:
        inside = (folder / spec).resolve()
        if (
            Path(spec).name != spec
            or inside.parent != folder.resolve()
            or inside.suffix != ".jsonl"
            or not inside.is_file()
        ):
            raise UnknownBenchmark(
                f"unknown benchmark {spec!r}; choose from {', '.join(BENCHMARK_FILES)} or a "
                f".jsonl file in the data folder"
            )
        return inside.stem, inside
    if spec in BENCHMARK_FILES:
        path = folder / BENCHMARK_FILES[spec]
        if not path.is_file():
            raise UnknownBenchmark(
                f"benchmark {spec}: {path} not found (set {DATA_ENV} or --data-dir to the "
                "folder holding the benchmark files)"
            )
        return spec, path
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json") or os.sep in spec:
        if not path.is_file():
            raise UnknownBenchmark(f"benchmark file not found: {spec}")
        return path.stem, path
    raise UnknownBenchmark(
        f"unknown benchmark {spec!r}; choose from {', '.join(BENCHMARK_FILES)} "
        "or give the path of a problems JSONL file"
    )


def _level(value: Any) -> str:
    """MATH levels come as 3 or "Level 3"; both are "3"."""
    text = str(value).strip()
    return text.removeprefix("Level ").strip()


def problem_of(row: dict[str, Any], line: int, fields: ProblemFields, where: str) -> Problem:
    """One problem from a JSONL row; errors name the file, line and field."""
    text = row.get(fields.problem)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}:{line}: field {fields.problem!r} is missing or empty")
    answer = row.get(fields.answer)
    if answer is None or isinstance(answer, dict | list):
        raise ValueError(f"{where}:{line}: field {fields.answer!r} is missing or not a value")
    try:
        gold = answer_to_text(answer).strip()
    except ValueError as exc:
        raise ValueError(f"{where}:{line}: field {fields.answer!r}: {exc}") from exc
    if not gold:
        raise ValueError(f"{where}:{line}: field {fields.answer!r} is empty")
    id_fields = (fields.id,) if fields.id else _AUTO_ID_FIELDS
    found = next((row[f] for f in id_fields if row.get(f) is not None), None)
    if found is None and fields.id:
        raise ValueError(f"{where}:{line}: field {fields.id!r} is missing")
    problem_id = str(found) if found is not None else str(line)
    metadata: dict[str, str] = {}
    if fields.subject and isinstance(row.get(fields.subject), str | int):
        metadata["subject"] = str(row[fields.subject])
    if fields.level and isinstance(row.get(fields.level), str | int):
        metadata["level"] = _level(row[fields.level])
    return Problem(id=problem_id, problem=text, answer=gold, metadata=metadata)


def read_problems(
    path: str | Path, fields: ProblemFields | None = None, limit: int | None = None
) -> list[Problem]:
    """The problems of a JSONL file (the first `limit`); ids must be unique."""
    fields = fields or ProblemFields()
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise ValueError(f"{path}:{line_number}: line longer than {MAX_LINE_CHARS} chars")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_number}: not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object")
            problem = problem_of(row, line_number, fields, str(path))
            if problem.id in seen:
                raise ValueError(
                    f"{path}:{line_number}: problem id {problem.id!r} repeats line "
                    f"{seen[problem.id]}; ids must be unique (set the id field)"
                )
            seen[problem.id] = line_number
            problems.append(problem)
    return problems


def load_benchmark(
    spec: str,
    data_dir: str | Path = "",
    fields: ProblemFields | None = None,
    limit: int | None = None,
    allow_files: bool = True,
) -> Benchmark:
    """A benchmark by name or path, its problems read (the first `limit`); see
    `benchmark_path` for allow_files."""
    name, path = benchmark_path(spec, data_dir, allow_files)
    problems = read_problems(path, fields, limit)
    if not problems:
        raise ValueError(f"benchmark {name}: no problems in {path}")
    return Benchmark(name, path, problems)
