"""TEST DOUBLE: a scripted in-process Generator for the cloning tests.

It answers each prompt with a Python function instead of a model, so tests can decide what
the "policy" says in a self-evaluation vote or a rewrite. It implements the real
`astro_core.protocols.Generator` Protocol, including the flat n-per-prompt result layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from astro_core.protocols import Completion, Generator

Responder = Callable[[str, int], str]  # (prompt, sample index) -> completion text


@dataclass
class ScriptedGenerator:
    respond: Responder
    calls: list[dict[str, object]] = field(default_factory=list)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        logprobs: bool = False,
    ) -> list[Completion]:
        self.calls.append({"prompts": list(prompts), "n": n, "stop": list(stop)})
        result = []
        for index, prompt in enumerate(prompts):
            for sample in range(n):
                text = self.respond(prompt, sample)
                result.append(Completion(index, text, len(text.split()), "stop", "scripted"))
        return result


def _protocol_check(generator: ScriptedGenerator) -> Generator:
    return generator  # mypy proves the double satisfies the Protocol
