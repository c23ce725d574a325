"""Synthetic problem families with exact answers, for the demo and the ASTRO-vs-Direct experiment.

The family `product` asks for the positive integer x with x * b = c. A solution guesses x and
checks the guess with one multiplication, whose result it compares with c:

    Try x = 6: 6 * 7 = 42 (need 49): wrong.

    So x = 6. The final answer is \\boxed{6}.

Checking is easier than producing, as in Stream of Search's Countdown: the warm start teaches
every multiplication of the family's range as a fact ("7 * 8 = 56."), the lookup a check needs,
but never division; x is only ever shown as the answer of a train problem. On a held-out problem
a small model's first guess is often wrong while its check of that guess is right, so a model
that reflects after a check and goes back can recover: what ASTRO's backtracking needs to pay
off. (An earlier family, x(x + b) = c, needed an addition and a two-digit product in each check,
and its wrong guesses' products were misstated as c: a 2M-parameter model learned to copy c, so
its reflections had no check to follow; docs/experiments.md.)

`warmup_records` writes the warm-start data: one-guess solutions where, with probability
`noise`, the guess is wrong, the check says so, and the solution answers the guess all the same
(the overconfidence that reflection should catch), so search trees over the warm model hold
correct and incorrect terminals; plus the multiplication facts.

Splits are disjoint by construction: a problem's (b, c) pair is hashed into `train` or
`heldout`, so a held-out problem never appears in training data whatever the seeds and sizes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from astro_core.problems import Problem
from astro_core.prompts import STEP_DELIMITER, problem_messages

Split = Literal["train", "heldout"]
FAMILIES = ("product",)
HELDOUT_SHARE = 5  # one (b, c) pair in HELDOUT_SHARE is held out


@dataclass(frozen=True)
class ProductProblem:
    """x * b = c with a unique positive integer root x."""

    x: int
    b: int

    @property
    def c(self) -> int:
        return self.x * self.b

    @property
    def split(self) -> Split:
        digest = hashlib.sha256(f"product:{self.b}:{self.c}".encode()).digest()
        return "heldout" if digest[0] % HELDOUT_SHARE == 0 else "train"

    @property
    def id(self) -> str:
        return f"product/b{self.b}-c{self.c}"

    def text(self) -> str:
        return f"Find the positive integer x such that x * {self.b} = {self.c}."

    def to_problem(self) -> Problem:
        return Problem(
            id=self.id,
            problem=self.text(),
            answer=str(self.x),
            metadata={"family": "product", "split": self.split, "b": str(self.b)},
        )

    def try_step(self, guess: int) -> str:
        """One guess and its check: the product, and where it misses c, what it should be."""
        return f"{self.check(guess)} {self.verdict(guess)}."

    def check(self, guess: int) -> str:
        """A try step up to its verdict: `Try x = 6: 6 * 7 = 42 (need 49):`."""
        return f"Try x = {guess}: {guess} * {self.b} = {guess * self.b} (need {self.c}):"

    def verdict(self, guess: int) -> str:
        return "right" if guess * self.b == self.c else "wrong"

    @staticmethod
    def answer_step(x: int) -> str:
        return f"So x = {x}. The final answer is \\boxed{{{x}}}."


@dataclass(frozen=True)
class FamilyRanges:
    """Parameter ranges of the `product` family (inclusive)."""

    x_min: int = 2
    x_max: int = 12
    b_min: int = 2
    b_max: int = 9

    def factors(self) -> Iterator[tuple[int, int]]:
        """Every (guess, b) pair a try step can multiply: guesses up to two past x_max."""
        for guess in range(1, self.x_max + 3):
            for b in range(self.b_min, self.b_max + 1):
                yield guess, b


RANGES = FamilyRanges()  # the family's ranges everywhere (problems, splits, facts, tokenizer)


def all_problems(ranges: FamilyRanges | None = None) -> list[ProductProblem]:
    """Every problem of the family, in a fixed order."""
    ranges = ranges or RANGES
    return [
        ProductProblem(x, b)
        for b in range(ranges.b_min, ranges.b_max + 1)
        for x in range(ranges.x_min, ranges.x_max + 1)
    ]


def sample_problems(
    n: int, seed: int, split: Split = "train", ranges: FamilyRanges | None = None
) -> list[ProductProblem]:
    """n distinct problems of one split, drawn with a seeded generator (n is capped by the
    split's size)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = [p for p in all_problems(ranges) if p.split == split]
    random.Random(seed).shuffle(pool)
    return pool[:n]


def noisy_solution(problem: ProductProblem, rng: random.Random, noise: float) -> list[str]:
    """A one-guess solution; with probability `noise` the guess is wrong, its check says so,
    and the solution answers it all the same (the overconfidence reflection should catch)."""
    guess = problem.x
    if rng.random() < noise:
        guess += rng.choice([d for d in (-2, -1, 1, 2) if problem.x + d >= 1])
    return [problem.try_step(guess), problem.answer_step(guess)]


def _record(record_id: str, user: list[dict[str, str]], answer: str) -> dict[str, object]:
    return {
        "messages": [*user, {"role": "assistant", "content": answer}],
        "problem_id": record_id,
        "style": "direct",
        "k": 0,
        "backtracks": 0,
        "node_path": [],
    }


def warmup_records(
    problems: list[ProductProblem],
    copies: int,
    seed: int,
    noise: float,
    ranges: FamilyRanges | None = None,
) -> list[dict[str, object]]:
    """SFT records (the traces JSONL format of `astro clone`), shuffled: `copies` noisy
    one-guess solutions of each problem and `copies` of each multiplication fact."""
    rng = random.Random(seed)
    records = []
    for _ in range(copies):
        for problem in problems:
            steps = noisy_solution(problem, rng, noise)
            user = problem_messages(problem.text())
            records.append(_record(problem.id, user, STEP_DELIMITER.join(steps)))
        for x, y in (ranges or RANGES).factors():
            user = [{"role": "user", "content": f"Compute {x} * {y}."}]
            records.append(_record(f"fact/{x}x{y}", user, f"{x} * {y} = {x * y}."))
    rng.shuffle(records)
    return records


_PROBLEM_TEXT = re.compile(r"Find the positive integer x such that x \* (\d{1,6}) = (\d{1,9})\.")
# A try step as the model writes it, whatever its product, c and verdict say.
_TRY_STEP = re.compile(r"Try x = (\d{1,6}):[^\n]*?\(need [^\n]*?\): (right|wrong)\.")


def parse_problem(text: str) -> ProductProblem | None:
    """The family problem `text` poses, or None when it poses none (another family, no
    positive integer root)."""
    match = _PROBLEM_TEXT.search(text)
    if match is None:
        return None
    b, c = int(match[1]), int(match[2])
    if b < 1 or c < b or c % b:
        return None
    return ProductProblem(c // b, b)


def restate_checks(problem: ProductProblem, text: str) -> str:
    """`text` with each try step restated from its guess: the product, c and the verdict as
    they are, not as the model wrote them (`Try x = 6: 6 * 7 = 49 (need 49): right.` becomes
    `Try x = 6: 6 * 7 = 42 (need 49): wrong.`). Procedure cloning's rewrite for this family:
    the paper has an LLM rewrite search steps; here the family itself knows the arithmetic,
    so a trace's reflections follow checks that say what the tree found."""
    return _TRY_STEP.sub(lambda m: problem.try_step(int(m[1])), text)


def stated_verdict(text: str) -> bool | None:
    """Whether the last try step in `text` calls its guess right (as written, true or not);
    None when the text has no try step."""
    verdicts = _TRY_STEP.findall(text)
    return verdicts[-1][1] == "right" if verdicts else None


def write_problems(problems: list[ProductProblem], out: str | Path) -> Path:
    """Write problems as JSONL (fields id, problem, answer + metadata), like the benchmarks."""
    path = Path(out)
    with path.open("w", encoding="utf-8") as handle:
        for p in problems:
            problem = p.to_problem()
            row = {"id": problem.id, "problem": problem.problem, "answer": problem.answer}
            row.update(problem.metadata)
            handle.write(json.dumps(row) + "\n")
    return path


def corpus(ranges: FamilyRanges | None = None) -> list[str]:
    """Text a tokenizer for this family is trained on: every problem and a solution of each."""
    texts = []
    for p in all_problems(ranges):
        texts.append(p.text())
        texts.extend([p.try_step(p.x), p.try_step(p.x + 1), p.answer_step(p.x)])
    texts.extend(f"Compute {x} * {y}." for x, y in (ranges or RANGES).factors())
    return texts


SYNTH_PREFIX = "synth:"
_SPLITS: tuple[Split, ...] = ("train", "heldout")


@dataclass(frozen=True)
class SynthSpec:
    """A synthetic problem set named in text: `synth:<family>[?n=N&seed=S&split=SPLIT]`.

    n defaults to the whole split, seed to 0, split to train."""

    family: str
    n: int
    seed: int = 0
    split: Split = "train"

    def problems(self) -> list[Problem]:
        return [p.to_problem() for p in self.family_problems()]

    def family_problems(self) -> list[ProductProblem]:
        return sample_problems(self.n, self.seed, self.split)


def is_synth_spec(text: str) -> bool:
    return text.startswith(SYNTH_PREFIX)


def parse_synth_spec(text: str) -> SynthSpec:
    """The SynthSpec `text` names; ValueError saying what is wrong (unknown family or key,
    a value that is not a number, more problems than the split has)."""
    body = text[len(SYNTH_PREFIX) :] if is_synth_spec(text) else text
    family, _, query = body.partition("?")
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {', '.join(FAMILIES)}")
    values: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("n", "seed", "split"):
            raise ValueError(f"{item!r} is not one of n=N, seed=S, split=train|heldout")
        if key in values:
            raise ValueError(f"{key} is given twice")
        values[key] = value
    split = values.get("split", "train")
    if split not in _SPLITS:
        raise ValueError(f"split must be train or heldout, not {split!r}")
    size = sum(1 for p in all_problems() if p.split == split)
    n, seed = size, 0
    for key in ("n", "seed"):
        if key in values:
            raw = values[key]
            if not raw.isdigit() or len(raw) > 10:
                raise ValueError(f"{key} must be a non-negative integer, not {raw!r}")
            if key == "n":
                n = int(raw)
            else:
                seed = int(raw)
    if not 1 <= n <= size:
        raise ValueError(f"n={n}: the {family} family's {split} split has {size} problems")
    return SynthSpec(family, n, seed, "train" if split == "train" else "heldout")
