"""TEST DOUBLE: a scripted Generator whose samples are chosen per (problem, sample index).

It implements the real `astro_core.protocols.Generator` Protocol (flat n-per-prompt layout,
Completion with token ids and finish reason) and hands out a chat template, so `evaluate`
runs unchanged; it records every call (prompt, n, seed) and is safe to call from threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from astro_core.prompts import ChatTemplate
from astro_core.protocols import Completion, Generator

TEMPLATE = ChatTemplate("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}|")
Responder = Callable[[str, int], str]  # (problem text, sample index) -> response


def problem_of(prompt: str) -> str:
    """The problem text inside a prompt built with TEMPLATE and the solve instruction."""
    return prompt.removeprefix("<user>").split("\n\nPlease reason step by step")[0]


@dataclass
class ScriptedGenerator:
    respond: Responder
    version: str = "scripted#1"
    calls: list[dict[str, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_template(self) -> ChatTemplate:
        return TEMPLATE

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
        with self.lock:
            self.calls.append(
                {"prompts": list(prompts), "n": n, "seed": seed, "temperature": temperature}
            )
        result = []
        for index, prompt in enumerate(prompts):
            for sample in range(n):
                text = self.respond(problem_of(prompt), sample)
                tokens = tuple(range(len(text.split())))
                result.append(
                    Completion(index, text, len(tokens), "eos", self.version, token_ids=tokens)
                )
        return result


def _protocol_check(generator: ScriptedGenerator) -> Generator:
    return generator  # mypy proves the double satisfies the Protocol
