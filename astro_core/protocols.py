"""The seams between the method and the outside world.

Algorithms in astro_core take these Protocols; services/ provides gRPC clients that implement
them, and tests pass in-process implementations. Nothing here knows about gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

# Why a completion ended: the model emitted end-of-sequence ("eos": it considers the text
# finished), a stop string was found ("stop_string": the text is cut before it), or the
# token budget ran out ("length").
FinishReason = Literal["eos", "stop_string", "length"]


@dataclass(frozen=True)
class Completion:
    """One generated continuation of one prompt."""

    prompt_index: int
    text: str
    num_tokens: int
    finish_reason: FinishReason
    model_version: str
    cumulative_logprob: float = 0.0
    token_logprobs: tuple[float, ...] = field(default=())
    # The generated token ids, exactly as sampled (trainers use them, never re-tokenized text).
    token_ids: tuple[int, ...] = field(default=())


@runtime_checkable
class Generator(Protocol):
    """Anything that turns prompts into completions: a local engine or a remote generator.

    Returns a flat list where the n completions of prompt i sit at [i*n, (i+1)*n).
    `max_tokens` is one budget for every prompt, or one per prompt (same length as prompts).
    """

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
    ) -> list[Completion]: ...


@dataclass(frozen=True)
class RewardMapping:
    """Reward for a correct and an incorrect answer (the paper's RL uses +1 / -1)."""

    correct: float = 1.0
    incorrect: float = -1.0


@dataclass(frozen=True)
class VerifyItem:
    """A model response to score against a gold answer."""

    response: str
    gold: str
    problem: str = ""


@dataclass(frozen=True)
class VerifyResult:
    correct: bool
    reward: float
    extracted_answer: str
    reason: str


@runtime_checkable
class Verifier(Protocol):
    """Scores responses against gold answers; results come back in input order."""

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = RewardMapping()
    ) -> list[VerifyResult]: ...
