"""Fixtures of the analysis tests: real eval directories of scripted checkpoints.

Each checkpoint is evaluated with `evaluate` (the real loop and verifier pool) on a few
MATH-500 and AIME24 problems; a TEST DOUBLE generator answers so that later checkpoints
backtrack more and are right more often, as the paper's RL checkpoints do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.cloning.phrases import Phrases
from astro_core.evaluation import EvalConfig, EvaluatedModel, evaluate, load_benchmark
from tests.evaluation.scripted import ScriptedGenerator

PAPER = Phrases()
N = 4


@dataclass(frozen=True)
class Checkpoint:
    label: str
    arm: str
    step: int | None
    correct: int  # samples of each problem (of N) that are right
    backtracks: int  # backtracks of sample i: this + i % 2


CHECKPOINTS = [
    Checkpoint("base", "base", None, 1, 0),
    Checkpoint("sft", "sft", None, 1, 1),
    Checkpoint("rl-10", "rl", 10, 1, 1),
    Checkpoint("rl-20", "rl", 20, 2, 2),
    Checkpoint("rl-30", "rl", 30, 3, 3),
]


def response(gold: str, right: bool, backtracks: int) -> str:
    steps = ["First we write down what is given."]
    for number in range(backtracks):
        steps.append(f"Then we try the value {number + 10}.")
        steps.append(
            PAPER.negative_reflection(
                PAPER.backtrack_to('wrote "First we write down what is given"')
            )
        )
    answer = gold if right else "98765"
    steps.append(f"Therefore, the final answer is $\\boxed{{{answer}}}$.")
    steps.append(PAPER.positive_reflection())
    return "\n\n".join(steps)


@pytest.fixture(scope="package")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=20)) as p:
        yield p


@pytest.fixture(scope="package")
def eval_dirs(
    tmp_path_factory: pytest.TempPathFactory, pool: VerifierPool, shared_data: Path
) -> dict[str, Path]:
    benchmarks = [
        load_benchmark("math500", shared_data, limit=6),
        load_benchmark("aime24", shared_data, limit=3),
    ]
    gold = {p.problem: p.answer for b in benchmarks for p in b.problems}
    root = tmp_path_factory.mktemp("evals")
    dirs = {}
    for ck in CHECKPOINTS:

        def respond(problem: str, i: int, ck: Checkpoint = ck) -> str:
            return response(gold[problem], i < ck.correct, ck.backtracks + i % 2)

        generator = ScriptedGenerator(respond, version=f"{ck.label}#1")
        out = root / ck.label
        meta = EvaluatedModel(label=ck.label, arm=ck.arm, step=ck.step)  # type: ignore[arg-type]
        evaluate(benchmarks, generator, pool, EvalConfig(n=N), out, model=meta)
        dirs[ck.label] = out
    return dirs


@pytest.fixture
def train_log(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [
        {
            "step": step,
            "loss": 1.0 / step,
            "reward_mean": -0.5 + step / 40,
            "completion_length_mean": 100 + 4 * step,
            "backtracks_mean": step / 15,
        }
        for step in range(1, 31)
    ]
    rows[5].pop("reward_mean")  # a step that logged no reward
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 31, "lo')
    return path
