"""TEST DOUBLES for unit tests of the search: a scripted generator and an exact-match verifier.

They implement the Generator and Verifier Protocols in-process so that the steps, answers and
log-probabilities of a search are known in advance and values can be computed by hand. The
integration tests use the real generator and verifier services instead.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from astro_core.problems import Problem
from astro_core.prompts import ChatTemplate
from astro_core.protocols import (
    Completion,
    FinishReason,
    Generator,
    RewardMapping,
    VerifyItem,
    VerifyResult,
)
from astro_core.search.answers import final_answer

# A plain template whose answer part starts after "A: ", so the fake can read the steps back.
TEMPLATE = ChatTemplate("Q: {{ messages[0]['content'] }}\nA: ")
DELIMITER = "\n\n"

Steps = tuple[str, ...]
DEFAULT_REWARDS = RewardMapping()


def steps_of(prompt: str) -> Steps:
    """The steps already written in a continuation prompt."""
    answer_part = prompt.split("\nA: ", 1)[1]
    return tuple(s for s in answer_part.split(DELIMITER) if s)


@dataclass
class Call:
    prompts: list[str]
    n: int
    stop: tuple[str, ...]
    budgets: tuple[int, ...]  # max_tokens of each prompt


def budgets_of(max_tokens: int | Sequence[int], count: int) -> tuple[int, ...]:
    """The Generator Protocol's max_tokens as one budget per prompt."""
    if isinstance(max_tokens, int):
        return (max_tokens,) * count
    budgets = tuple(max_tokens)
    assert len(budgets) == count, "one budget per prompt"
    return budgets


# A step choice: (text, logprob), or (text, logprob, "eos") for a step the model ended with
# its end-of-sequence token instead of the step delimiter.
Choice = tuple[str, float] | tuple[str, float, FinishReason]


@dataclass
class ScriptedGenerator:
    """TEST DOUBLE. `expand(steps)` gives the choices for the next step; `rollout(steps)`
    gives whole continuations. Completion j of a prompt is choice j mod len. A completion
    takes `tokens_of(text)` tokens (default `tokens_per_step`), or its prompt's budget if that
    is less (then it ends with "length"). Expansions end at the stop string unless the choice
    says "eos"; rollouts end with EOS."""

    expand: Callable[[Steps], Sequence[Choice]]
    rollout: Callable[[Steps], Sequence[str]]
    tokens_per_step: int = 3
    tokens_of: Callable[[str], int] | None = None
    calls: list[Call] = field(default_factory=list)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_tokens: int | Sequence[int] = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        logprobs: bool = False,
    ) -> list[Completion]:
        budgets = budgets_of(max_tokens, len(prompts))
        self.calls.append(Call(list(prompts), n, tuple(stop), budgets))
        out = []
        for index, prompt in enumerate(prompts):
            steps = steps_of(prompt)
            for j in range(n):
                finish: FinishReason = "eos"
                if stop:
                    choices = self.expand(steps)
                    choice = choices[j % len(choices)]
                    text, logprob = choice[0], choice[1]
                    finish = choice[2] if len(choice) == 3 else "stop_string"
                else:
                    texts = self.rollout(steps)
                    text, logprob = texts[j % len(texts)], -1.0
                tokens = self.tokens_of(text) if self.tokens_of else self.tokens_per_step
                if tokens > budgets[index]:
                    tokens, finish = budgets[index], "length"
                out.append(
                    Completion(
                        prompt_index=index,
                        text=text,
                        num_tokens=tokens,
                        finish_reason=finish,
                        model_version="scripted",
                        cumulative_logprob=logprob,
                    )
                )
        return out


@dataclass
class ExactVerifier:
    """TEST DOUBLE: correct when the last \\boxed{} equals the gold text exactly."""

    batches: list[int] = field(default_factory=list)

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = DEFAULT_REWARDS
    ) -> list[VerifyResult]:
        self.batches.append(len(items))
        results = []
        for item in items:
            answer = final_answer(item.response)
            ok = answer is not None and answer == item.gold
            reward = rewards.correct if ok else rewards.incorrect
            results.append(VerifyResult(ok, reward, answer or "", "equal" if ok else "not equal"))
        return results


def policy_expand(steps: Steps) -> list[tuple[str, float]]:
    """A policy that proposes two openings, then right and wrong answers."""
    if not steps:
        return [("Let x be the number.", -1.0), ("Guess first.", -2.0)]
    return [(f"So x is \\boxed{{1}} ({len(steps)}).", -1.0), ("Maybe more work.", -1.5)]


def policy_rollout(steps: Steps) -> list[str]:
    return ["Compute.\n\nThe answer is \\boxed{1}.", "I think \\boxed{7}."]


@dataclass
class SlowGenerator:
    """TEST DOUBLE: another generator, `delay` seconds slower per call."""

    inner: Generator
    delay: float

    def generate(self, prompts: Sequence[str], **kw: Any) -> list[Completion]:
        time.sleep(self.delay)
        return self.inner.generate(prompts, **kw)


def endless_policy() -> ScriptedGenerator:
    """A policy that never answers nor ends: every round of its searches generates."""
    return ScriptedGenerator(lambda steps: [("more", -1.0)], lambda steps: ["no answer"])


def scripted_backends(settings: object) -> object:
    """Coordinator `settings.backends` factory for service tests: the scripted policy and the
    exact verifier. ASTRO_FAKE_GENERATE_DELAY (seconds) slows each generate call, so a test
    can kill a replica mid-search."""
    import os

    from services.coordinator.worker import Backends

    delay = float(os.environ.get("ASTRO_FAKE_GENERATE_DELAY", "0"))
    slow = SlowGenerator(ScriptedGenerator(policy_expand, policy_rollout), delay)
    return Backends(slow, ExactVerifier(), lambda: TEMPLATE)


TOKENS_MARK = re.compile(r" t(\d+)$")


def solution_tokens(steps: Steps) -> int:
    """Tokens of a solution prefix written by RandomPolicy (each step ends with " t<n>")."""
    total = 0
    for step in steps:
        found = TOKENS_MARK.search(step)
        assert found, f"step {step!r} was not written by RandomPolicy"
        total += int(found.group(1))
    return total


@dataclass
class RandomPolicy:
    """TEST DOUBLE: a Generator whose completions are random, yet the same for the same
    (seed, prompt, sample). Steps have random lengths and may state a right or wrong answer,
    end with EOS (marked "[end]"), come back empty, or run out of budget ("length"); rollouts
    are a few steps that may end in an answer. Every step ends with " t<tokens>", the tokens
    it reports, so the budgets of each call are checked against the solution it continues:
    no prompt may be given more than its solution has left, or than a step may take."""

    seed: int
    max_step_tokens: int
    max_solution_tokens: int
    answers: str = "123"
    calls: list[Call] = field(default_factory=list)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_tokens: int | Sequence[int] = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        logprobs: bool = False,
    ) -> list[Completion]:
        budgets = budgets_of(max_tokens, len(prompts))
        self.calls.append(Call(list(prompts), n, tuple(stop), budgets))
        out = []
        for index, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            steps = steps_of(prompt)
            assert not any("[end]" in s for s in steps), f"a solution the model ended: {steps}"
            used = solution_tokens(steps)
            assert 1 <= budget and used + budget <= self.max_solution_tokens, (used, budget)
            if stop:
                assert budget <= self.max_step_tokens
            for j in range(n):
                rng = random.Random(f"{self.seed}|{bool(stop)}|{steps}|{j}")
                make = self._step if stop else self._rollout
                text, drawn, finish = make(rng)
                if drawn > budget:  # cut before the model could end it
                    text, drawn, finish = text.replace("[end]", "[cut]"), budget, "length"
                out.append(
                    Completion(
                        prompt_index=index,
                        text=f"{text} t{drawn}" if text else "",
                        num_tokens=drawn,
                        finish_reason=finish,
                        model_version="random",
                        cumulative_logprob=-rng.uniform(0.1, 8.0),
                    )
                )
        return out

    def _answer(self, rng: random.Random) -> str:
        return f"so \\boxed{{{rng.choice(self.answers)}}}"

    def _step(self, rng: random.Random) -> tuple[str, int, FinishReason]:
        drawn = rng.randint(1, self.max_step_tokens + 2)
        kind = rng.choice(["step", "step", "step", "answer", "eos", "eos answer", "empty"])
        if kind == "step":
            return f"w{rng.randint(0, 9)}", drawn, "stop_string"
        if kind == "answer":
            return self._answer(rng), drawn, "stop_string"
        if kind == "eos":
            return "[end]", drawn, "eos"
        if kind == "eos answer":
            return f"[end] {self._answer(rng)}", drawn, "eos"
        return "", 1, "stop_string"  # the model wrote the delimiter at once

    def _rollout(self, rng: random.Random) -> tuple[str, int, FinishReason]:
        parts = [f"r{rng.randint(0, 9)}" for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.6:
            parts.append(self._answer(rng))
        drawn = rng.randint(1, self.max_solution_tokens + 4)
        return DELIMITER.join(parts), drawn, "eos"


class RpcFailure(grpc.RpcError):
    """TEST DOUBLE of the error a gRPC client call raises: a status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def problem_list(count: int) -> list[Problem]:
    """Problems the scripted policy solves (gold "1")."""
    return [Problem(id=f"q{i}", problem=f"What is {i} / {i}?", answer="1") for i in range(count)]
