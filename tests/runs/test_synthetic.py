"""The synthetic product family: every answer is exact (the verifier agrees with an
independent solver), the train and held-out splits never share a problem, and nothing of the
held-out split reaches training data (warm-start records, a run's searched problems)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.answers import check
from astro_core.protocols import VerifyItem
from astro_core.synthetic import (
    all_problems,
    corpus,
    parse_synth_spec,
    sample_problems,
    warmup_records,
)


def solve(b: int, c: int) -> list[int]:
    """Positive integer roots of x * b = c by division (independent of how the family builds
    its problems)."""
    quotient, remainder = divmod(c, b)
    return [quotient] if remainder == 0 and quotient > 0 else []


def parse(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"Find the positive integer x such that x \* (\d+) = (\d+)\.", text)
    assert found, text
    return int(found.group(1)), int(found.group(2))


def test_every_answer_is_the_unique_root_and_the_verifier_agrees() -> None:
    problems = all_problems()
    assert len(problems) == len({p.id for p in problems}) == 88
    for p in problems:
        problem = p.to_problem()
        b, c = parse(problem.problem)
        assert solve(b, c) == [int(problem.answer)]
        right = check(VerifyItem(p.answer_step(p.x), problem.answer, problem.problem))
        wrong = check(VerifyItem(p.answer_step(p.x + 1), problem.answer, problem.problem))
        assert right.correct and not wrong.correct, (problem, right, wrong)
        # a check step's arithmetic is exact and its verdict says whether the guess is x
        for guess in range(1, p.x + 4):
            step = re.fullmatch(
                r"Try x = (\d+): (\d+) \* (\d+) = (\d+) \(need (\d+)\): (right|wrong)\.",
                p.try_step(guess),
            )
            assert step, p.try_step(guess)
            g, left, factor, product, need = map(int, step.groups()[:5])
            assert g == left == guess and factor == b and need == c
            assert product == guess * b
            assert step.group(6) == ("right" if guess == p.x else "wrong")


def test_the_splits_are_disjoint_whatever_the_draw() -> None:
    train = {p.id for p in all_problems() if p.split == "train"}
    heldout = {p.id for p in all_problems() if p.split == "heldout"}
    assert train and heldout and not train & heldout
    assert len(heldout) / (len(train) + len(heldout)) == pytest.approx(0.2, abs=0.1)
    for seed in range(20):
        for n in (1, 7, 200):
            assert {p.id for p in sample_problems(n, seed, "train")} <= train
            assert {p.id for p in sample_problems(n, seed, "heldout")} <= heldout
    assert len(sample_problems(500, 0, "train")) == len(train)


def test_warm_start_data_holds_no_held_out_problem() -> None:
    heldout = [p for p in all_problems() if p.split == "heldout"]
    for seed in range(5):
        train = sample_problems(200, seed, "train")
        records = warmup_records(train, copies=3, seed=seed, noise=0.3)
        text = "\n".join(json.dumps(r["messages"]) for r in records)
        for p in heldout:
            assert p.text() not in text
            assert f'"{p.id}"' not in json.dumps([r["problem_id"] for r in records])
        solutions = [r for r in records if not str(r["problem_id"]).startswith("fact/")]
        by_id = {p.id: p for p in train}
        wrong = 0
        for record in solutions:
            problem = by_id[str(record["problem_id"])]
            answer = record["messages"][-1]["content"]  # type: ignore[index]
            verdict = check(VerifyItem(answer, str(problem.x)))
            if not verdict.correct:
                wrong += 1
                # an honest check that says so, then the guess answered all the same
                assert answer.split("\n\n")[0].endswith(f"(need {problem.c}): wrong.")
                assert f"= {problem.c} " not in answer
            else:
                assert answer.split("\n\n")[0].endswith(f"= {problem.c} (need {problem.c}): right.")
        assert wrong / len(solutions) == pytest.approx(0.3, abs=0.1)


def test_the_corpus_covers_every_problem() -> None:
    text = "\n".join(corpus())
    assert all(p.text() in text for p in all_problems())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("synth:nope", "unknown synthetic family"),
        ("synth:product?n=0", "n=0"),
        ("synth:product?n=-1", "n must be a non-negative integer"),
        ("synth:product?seed=1e9", "seed must be a non-negative integer"),
        ("synth:product?n=99999999999", "n must be a non-negative integer"),
        ("synth:product?split=test", "split must be train or heldout"),
        ("synth:product?n=3&n=4", "n is given twice"),
        ("synth:product?limit=3", "'limit=3' is not one of"),
    ],
)
def test_bad_synth_specs(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_synth_spec(text)


def test_synth_specs_draw_what_they_say() -> None:
    spec = parse_synth_spec("synth:product?n=5&seed=9&split=heldout")
    problems = spec.problems()
    assert len(problems) == 5 and all(p.metadata["split"] == "heldout" for p in problems)
    assert problems == parse_synth_spec("synth:product?split=heldout&seed=9&n=5").problems()
    assert problems != parse_synth_spec("synth:product?n=5&seed=10&split=heldout").problems()


def test_astro_data_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["data", "synth", "--n", "6", "--seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["split"] == "train" for r in rows)
    assert [r["id"] for r in rows] == [p.id for p in sample_problems(6, 2, "train")]
    held = tmp_path / "h.jsonl"
    result = runner.invoke(
        app, ["data", "synth", "--n", "3", "--split", "heldout", "--out", str(held)]
    )
    assert result.exit_code == 0
    assert not {r["id"] for r in rows} & {
        json.loads(x)["id"] for x in held.read_text().splitlines()
    }
    warm = tmp_path / "w.jsonl"
    result = runner.invoke(
        app, ["data", "warmup", "--n", "4", "--copies", "2", "--noise", "0", "--out", str(warm)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in warm.read_text().splitlines()]
    assert {"messages", "problem_id", "style"} <= set(records[0])
    for args, message in [
        (["synth", "--n", "0", "--out", str(out)], "--n: must be between 1 and"),
        (["synth", "--family", "cubes", "--out", str(out)], "--family: unknown family"),
        (["synth", "--split", "test", "--out", str(out)], "--split: must be train or heldout"),
        (["synth", "--out", str(tmp_path)], "is a folder"),
        (["synth", "--out", str(tmp_path / "no" / "x.jsonl")], "does not exist"),
        (["warmup", "--noise", "2", "--out", str(warm)], "--noise: must be between 0 and 1"),
        (["warmup", "--copies", "0", "--out", str(warm)], "--copies: must be between"),
    ]:
        result = runner.invoke(app, ["data", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
