"""TEST DOUBLE: a scripted in-process Generator for the training tests.

Each prompt is answered by a Python function instead of a model, so a test knows exactly
which completions are correct (and hence each prompt's true pass rate). It implements the
real `astro_core.protocols.Generator` Protocol, including the n-per-prompt layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from astro_core.protocols import Completion, Generator

Responder = Callable[[str, int], str]  # (prompt, sample index) -> completion text


@dataclass
class ScriptedGenerator:
    respond: Responder
    model_version: str = "scripted"
    fail_after_calls: int | None = None  # raise on this call, to stop a run midway
    calls: list[dict[str, object]] = field(default_factory=list)

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
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise ConnectionError("scripted generator went away")
        self.calls.append({"prompts": list(prompts), "n": n, "seed": seed})
        result = []
        for index, prompt in enumerate(prompts):
            for sample in range(n):
                text = self.respond(prompt, sample)
                ids = tuple(range(1, len(text.split()) + 1))
                result.append(
                    Completion(
                        index,
                        text,
                        len(ids),
                        "eos",
                        self.model_version,
                        token_logprobs=(-1.0,) * len(ids),
                        token_ids=ids,
                    )
                )
        return result


def _protocol_check(generator: ScriptedGenerator) -> Generator:
    return generator  # mypy proves the double satisfies the Protocol
