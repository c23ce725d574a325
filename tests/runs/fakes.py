"""TEST DOUBLES for run tests that need no model: a policy that solves the synthetic product
family noisily, through the coordinator's `settings.backends` hook.

The policy guesses x (the right one and a wrong one), checks the guess and answers it, so a
search tree holds correct and incorrect terminals and cloning has something to clone; the
exact-match verifier grades. The end-to-end tests use the real generator, verifier, registry
and trainer instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from astro_core.synthetic import ProductProblem
from tests.search.fakes import (
    TEMPLATE,
    ExactVerifier,
    ScriptedGenerator,
    SlowGenerator,
    Steps,
    budgets_of,
)

PROBLEM = re.compile(r"x \* (\d+) = (\d+)")
TRY = re.compile(r"Try x = (\d+):")
VOTE = "Is this solution correct?"


def _root(b: int, c: int) -> int:
    return c // b


def _try(x: int, b: int, c: int) -> str:
    return ProductProblem(_root(b, c), b).try_step(x)


def _answer(x: int) -> str:
    return f"So x = {x}. The final answer is \\boxed{{{x}}}."


def family_policy(prompt: str) -> tuple[int, int]:
    found = PROBLEM.search(prompt)
    assert found, f"not a product-family prompt: {prompt!r}"
    return int(found.group(1)), int(found.group(2))


@dataclass
class FamilyGenerator:
    """TEST DOUBLE Generator: the right guess and a wrong one (x + 1), then their answers."""

    loaded: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prompts: dict[str, tuple[int, int]] = {}
        self.inner = ScriptedGenerator(self._expand, self._rollout)

    def generate(self, prompts: Any, **kw: Any) -> Any:
        from astro_core.protocols import Completion

        if any(VOTE in p for p in prompts):  # self-evaluation: every solution looks right
            n = int(kw.get("n", 1))
            return [
                Completion(i, "Yes", 1, "eos", "family")
                for i in range(len(prompts))
                for _ in range(n)
            ]
        results = []
        budgets = budgets_of(kw.pop("max_tokens", 256), len(prompts))
        for index, prompt in enumerate(prompts):
            self.current = family_policy(prompt)
            for completion in self.inner.generate([prompt], max_tokens=budgets[index], **kw):
                results.append(replace(completion, prompt_index=index))
        return results

    def _expand(self, steps: Steps) -> list[tuple[str, float]]:
        b, c = self.current
        x = _root(b, c)
        if not steps:
            return [(_try(x, b, c), -1.0), (_try(x + 1, b, c), -1.5)]
        guess = TRY.search(steps[-1])
        g = int(guess.group(1)) if guess else x
        return [(_answer(g), -0.5)]

    def _rollout(self, steps: Steps) -> list[str]:
        b, c = self.current
        x = _root(b, c)
        guess = TRY.search(steps[-1]) if steps else None
        if guess:
            return [_answer(int(guess.group(1)))]
        return [_try(x, b, c) + "\n\n" + _answer(x), _try(x + 1, b, c) + "\n\n" + _answer(x + 1)]


def family_backends(settings: object) -> object:
    """Coordinator `settings.backends` factory: the family policy and the exact verifier.
    ASTRO_FAKE_GENERATE_DELAY (seconds) slows each generate call, so a test can act mid-stage."""
    from services.coordinator.worker import Backends

    delay = float(os.environ.get("ASTRO_FAKE_GENERATE_DELAY", "0"))
    generator = FamilyGenerator()
    slow = SlowGenerator(generator, delay)
    return Backends(slow, ExactVerifier(), lambda: TEMPLATE, load_model=generator.loaded.append)
