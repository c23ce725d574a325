"""Benchmarks by name from the shared data folder, custom JSONL files, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_core.evaluation.benchmarks import (
    UnknownBenchmark,
    load_benchmark,
    read_problems,
    shared_data_dir,
)
from astro_core.evaluation.config import EvalConfig, ProblemFields


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_shared_benchmarks_by_name(shared_data: Path) -> None:
    math500 = load_benchmark("math500", shared_data)
    amc23 = load_benchmark("amc23", shared_data)
    aime24 = load_benchmark("aime24", shared_data)
    assert (len(math500.problems), len(amc23.problems), len(aime24.problems)) == (500, 40, 30)
    first = math500.problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.metadata == {"subject": "Precalculus", "level": "2"}
    levels: dict[str, int] = {}
    for p in math500.problems:
        levels[p.metadata["level"]] = levels.get(p.metadata["level"], 0) + 1
    assert levels == {"1": 43, "2": 90, "3": 105, "4": 128, "5": 134}  # SOURCES.md
    # AMC23 stores floats: 27.0 is the answer "27"; ids are the file's ints
    assert amc23.problems[0].answer == "27" and amc23.problems[0].id == "0"
    assert all(not p.answer.endswith(".0") for p in amc23.problems)
    # AIME24 keeps its leading zeros (the verifier compares numbers)
    assert "025" in {p.answer for p in aime24.problems}
    assert load_benchmark("aime24", shared_data, limit=3).problems == aime24.problems[:3]


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "amc23.jsonl", [{"id": 7, "problem": "1+1?", "answer": 2.0}])
    monkeypatch.setenv("ASTRO_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    bench = load_benchmark("amc23")
    assert [(p.id, p.answer) for p in bench.problems] == [("7", "2")]
    other = tmp_path / "other"
    other.mkdir()
    write_jsonl(other / "amc23.jsonl", [{"id": 8, "problem": "2+2?", "answer": 4}])
    assert (
        load_benchmark("amc23", EvalConfig(shared_data=str(other)).shared_data).problems[0].id
        == "8"
    )
    with pytest.raises(UnknownBenchmark, match="math500.*not found.*ASTRO_SHARED_DATA"):
        load_benchmark("math500")


def test_default_data_dir_is_beside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASTRO_SHARED_DATA", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert shared_data_dir() == repo.parent / "shared" / "data"


def test_unknown_benchmark_names_the_choices() -> None:
    with pytest.raises(UnknownBenchmark, match="unknown benchmark 'gsm8k'.*math500, amc23"):
        load_benchmark("gsm8k")
    with pytest.raises(UnknownBenchmark, match="not found: nowhere/x.jsonl"):
        load_benchmark("nowhere/x.jsonl")


def test_custom_file_with_configured_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"q": "What is 2+2?", "gold": 4, "key": "a", "type": "Arithmetic", "level": "Level 1"},
            {"q": "What is 3+3?", "gold": "6", "key": "b", "level": 2},
        ],
    )
    fields = ProblemFields(problem="q", answer="gold", id="key", subject="type")
    bench = load_benchmark(str(path), fields=fields)
    assert bench.name == "mine"
    assert [(p.id, p.problem, p.answer) for p in bench.problems] == [
        ("a", "What is 2+2?", "4"),
        ("b", "What is 3+3?", "6"),
    ]
    assert bench.problems[0].metadata == {"subject": "Arithmetic", "level": "1"}
    assert bench.problems[1].metadata == {"level": "2"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"problem": "x"}], "mine.jsonl:1: field 'answer' is missing"),
        ([{"problem": "", "answer": "1"}], "field 'problem' is missing or empty"),
        ([{"problem": "x", "answer": [1]}], "field 'answer' is missing or not a value"),
        ([{"problem": "x", "answer": True}], "cannot be a boolean"),
        ([{"problem": "x", "answer": "  "}], "field 'answer' is empty"),
        (["just text"], "mine.jsonl:1: expected a JSON object"),
        (
            [{"id": 1, "problem": "x", "answer": "1"}, {"id": 1, "problem": "y", "answer": "2"}],
            "mine.jsonl:2: problem id '1' repeats line 1",
        ),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, rows: list[object], message: str) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        read_problems(path)


def test_invalid_json_and_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "answer": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        read_problems(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no problems"):
        load_benchmark(str(empty))


def test_ids_default_to_line_numbers(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "a", "answer": 1}] * 2)
    assert [p.id for p in read_problems(path)] == ["1", "2"]
    with pytest.raises(ValueError, match="field 'key' is missing"):
        read_problems(path, ProblemFields(id="key"))


def test_a_service_reaches_only_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "amc23.jsonl", [{"id": 1, "problem": "1+1?", "answer": 2}])
    write_jsonl(data / "extra.jsonl", [{"id": 1, "problem": "2+2?", "answer": 4}])
    outside = write_jsonl(tmp_path / "secret.jsonl", [{"id": 1, "problem": "x", "answer": 1}])
    assert load_benchmark("amc23", data, allow_files=False).name == "amc23"
    assert load_benchmark("extra.jsonl", data, allow_files=False).name == "extra"
    for spec in [str(outside), "../secret.jsonl", "sub/../../secret.jsonl", "extra", "nope.jsonl"]:
        with pytest.raises(UnknownBenchmark, match="a .jsonl file in the data folder"):
            load_benchmark(spec, data, allow_files=False)
    assert load_benchmark(str(outside), data).name == "secret"  # the CLI user's own file
