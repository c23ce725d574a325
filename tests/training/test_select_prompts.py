"""Prompt selection: a scripted generator with known pass rates, the real verifier pool."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.models.tiny import CHAT_TEMPLATE
from astro_core.prompts import ChatTemplate
from astro_core.training.select_prompts import Interval, read_prompt_rows, select_prompts
from tests.training.scripted import ScriptedGenerator

N = 4
TEMPLATE = ChatTemplate(CHAT_TEMPLATE, "<s>", "</s>")


def respond(prompt: str, sample: int) -> str:
    """Problem "solve #i (k right)": the first k of the n samples box the right answer."""
    index, right = map(int, re.search(r"solve #(\d+) \((\d+) right\)", prompt).groups())
    answer = index + 1 if sample < right else index + 100
    return f"We compute carefully. The answer is $\\boxed{{{answer}}}$."


@pytest.fixture(scope="module")
def verifier() -> Iterator[VerifierPool]:
    pool = VerifierPool(VerifierConfig(workers=1))
    yield pool
    pool.close()


def write_prompts(path: Path, rights: list[int]) -> Path:
    with path.open("w") as f:
        for i, right in enumerate(rights):
            f.write(
                json.dumps(
                    {
                        "id": f"p{i}",
                        "problem": f"solve #{i} ({right} right)",
                        "answer": str(i + 1),
                        "level": 3,
                    }
                )
                + "\n"
            )
    return path


RIGHTS = [0, 1, 2, 3, 4, 2, 0, 4, 1]


def test_keeps_exactly_the_prompts_inside_the_open_interval(tmp_path: Path, verifier) -> None:
    rows = read_prompt_rows(write_prompts(tmp_path / "prompts.jsonl", RIGHTS))
    generator = ScriptedGenerator(respond)
    summary = select_prompts(
        generator,
        verifier,
        rows,
        TEMPLATE,
        output=tmp_path / "kept.jsonl",
        record=tmp_path / "rates.jsonl",
        interval=Interval(0.25, 1.0),
        num_samples=N,
        max_completion_length=32,
        prompts_per_call=4,
    )
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    # 0.25 is outside the open interval; 0.5 and 0.75 are in; 1.0 is out
    expected = [i for i, r in enumerate(RIGHTS) if 0.25 < r / N < 1.0]
    assert [row["id"] for row in kept] == [f"p{i}" for i in expected]
    assert [row["pass_rate"] for row in kept] == [RIGHTS[i] / N for i in expected]
    assert all(row["num_samples"] == N and row["level"] == 3 for row in kept)
    assert (summary.total, summary.kept) == (len(RIGHTS), len(expected))
    assert summary.too_easy == RIGHTS.count(4)
    assert summary.too_hard == sum(1 for r in RIGHTS if r / N <= 0.25)
    # every prompt went to the generator once, n samples each, in chunks of 4 prompts
    assert [len(c["prompts"]) for c in generator.calls] == [4, 4, 1]
    assert all(c["n"] == N for c in generator.calls)
    rates = [json.loads(line) for line in (tmp_path / "rates.jsonl").read_text().splitlines()]
    assert [r["pass_rate"] for r in rates] == [r / N for r in RIGHTS]


def test_a_stopped_selection_resumes_without_measuring_again(tmp_path: Path, verifier) -> None:
    rows = read_prompt_rows(write_prompts(tmp_path / "prompts.jsonl", RIGHTS))
    common = dict(
        output=tmp_path / "kept.jsonl",
        record=tmp_path / "rates.jsonl",
        interval=Interval(0.0, 1.0),
        num_samples=N,
        max_completion_length=32,
        prompts_per_call=4,
    )
    with pytest.raises(ConnectionError):
        select_prompts(
            ScriptedGenerator(respond, fail_after_calls=1), verifier, rows, TEMPLATE, **common
        )
    assert not (tmp_path / "kept.jsonl").exists()
    again = ScriptedGenerator(respond)
    summary = select_prompts(again, verifier, rows, TEMPLATE, **common)
    assert summary.resumed == 4
    assert sum(len(c["prompts"]) for c in again.calls) == len(RIGHTS) - 4
    kept = [json.loads(line)["id"] for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert kept == [f"p{i}" for i, r in enumerate(RIGHTS) if 0 < r < N]


def test_a_record_of_another_dataset_is_refused(tmp_path: Path, verifier) -> None:
    rows = read_prompt_rows(write_prompts(tmp_path / "a.jsonl", RIGHTS))
    common = dict(
        output=tmp_path / "kept.jsonl",
        record=tmp_path / "rates.jsonl",
        interval=Interval(0.0, 1.0),
        num_samples=N,
        max_completion_length=32,
    )
    select_prompts(ScriptedGenerator(respond), verifier, rows, TEMPLATE, **common)
    other = read_prompt_rows(write_prompts(tmp_path / "b.jsonl", [1, 3, 2]))
    other = [
        r.__class__(r.index, r.problem.__class__("x", "other problem", "1"), r.row) for r in other
    ]
    with pytest.raises(ValueError, match="records another dataset"):
        select_prompts(ScriptedGenerator(respond), verifier, other, TEMPLATE, **common)


@pytest.mark.parametrize("low,high", [(0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), (0.9, 0.1)])
def test_bad_intervals_are_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="pass-rate interval"):
        Interval(low, high)


def test_bad_prompt_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: field 'answer' is missing"):
        read_prompt_rows(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_rows(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_prompt_rows(tmp_path / "nope.jsonl")
