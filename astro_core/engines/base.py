"""What every engine shares: the request types, validation, stop strings, seeds, versions.

An engine is a `Generator` (astro_core.protocols) that also knows which model it serves.
Besides `generate` it offers `generate_batch`, which runs several requests, each with its own
sampling parameters, as one engine batch, and `start_batch`, a `RunningBatch` that requests
join and leave between decode steps (continuous batching): the generator service feeds
concurrent calls through it, and a request whose caller gave up leaves at the next step.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from astro_core.prompts import ChatTemplate
from astro_core.protocols import Completion


class InvalidRequest(ValueError):
    """A generation request the engine cannot serve; the message says what is wrong."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; the keyword arguments of `Generator.generate`."""

    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def check(self) -> None:
        """Raise InvalidRequest naming the first parameter out of range."""
        if self.n < 1:
            raise InvalidRequest(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN, inf too
            raise InvalidRequest(f"temperature must be >= 0 and finite, got {self.temperature}")
        if not 0 < self.top_p <= 1:  # also rejects NaN
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must not be empty")


@dataclass(frozen=True)
class GenerationRequest:
    """Prompts (final text) to complete with one set of sampling parameters.

    `max_tokens`, when given, is a budget per prompt that replaces `params.max_tokens`
    (search rollouts each have their own remaining solution budget, yet share one batch).
    """

    prompts: tuple[str, ...]
    params: SamplingParams = SamplingParams()
    max_tokens: tuple[int, ...] = ()

    def budget(self, prompt_index: int) -> int:
        """The token budget of one prompt."""
        return self.max_tokens[prompt_index] if self.max_tokens else self.params.max_tokens

    def check(self) -> None:
        """Raise InvalidRequest naming the first field out of range."""
        self.params.check()
        if self.max_tokens:
            if len(self.max_tokens) != len(self.prompts):
                raise InvalidRequest(
                    f"max_tokens has {len(self.max_tokens)} budgets for "
                    f"{len(self.prompts)} prompts; give one per prompt"
                )
            low = min(self.max_tokens)
            if low < 1:
                raise InvalidRequest(f"max_tokens must be >= 1, got {low}")


def request_of(
    prompts: Sequence[str], max_tokens: int | Sequence[int], params: SamplingParams
) -> GenerationRequest:
    """A GenerationRequest from the Generator Protocol's arguments (one or per-prompt budgets)."""
    if isinstance(max_tokens, int):
        return GenerationRequest(tuple(prompts), replace(params, max_tokens=max_tokens))
    budgets = tuple(int(b) for b in max_tokens)
    # params.max_tokens stays a valid number; the per-prompt budgets are what the engine uses.
    return GenerationRequest(tuple(prompts), params, budgets)


class Engine(Protocol):
    """A loaded model that generates. Both engines (hf, vllm) implement it."""

    kind: str
    model_name: str
    model_version: str
    model_path: str
    device: str
    max_model_len: int

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

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """One list of completions per request, prompt i's n completions at [i*n, (i+1)*n)."""
        ...

    def start_batch(self, capacity: int) -> RunningBatch:
        """An empty batch decoding at most `capacity` sequences together (see RunningBatch)."""
        ...

    def encode_request(self, request: GenerationRequest) -> list[list[int]]:
        """Check the request and return each prompt's token ids; raises InvalidRequest."""
        ...

    def chat_template(self) -> ChatTemplate: ...

    def close(self) -> None:
        """Release the weights (and GPU memory) now rather than at garbage collection."""
        ...


class EngineBase(ABC):
    """Shared behaviour: `generate` is one request of `generate_batch`; prompt checks."""

    kind: str
    model_name: str
    model_version: str
    model_path: str
    device: str
    max_model_len: int
    tokenizer: Any

    def __init__(self) -> None:
        # Requests are checked on service threads while a batch decodes on the engine thread.
        self.tokenizer_lock = threading.Lock()

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
        params = SamplingParams(n, 1, temperature, top_p, tuple(stop), seed, logprobs)
        [completions] = self.generate_batch([request_of(prompts, max_tokens, params)])
        return completions

    @abstractmethod
    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]: ...

    @abstractmethod
    def start_batch(self, capacity: int) -> RunningBatch: ...

    @functools.cached_property
    def chars_per_token_bound(self) -> int:
        """Most characters of a prompt one token can cover. A byte-level BPE entry spells one
        byte per character, and a character is at least one byte, so no token covers more
        characters than its entry is long; a normalizer may fold several characters into one
        (NFKC, stripped accents), so then four times that."""
        longest = max((len(entry) for entry in self.tokenizer.get_vocab()), default=1)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        folds = backend is None or backend.normalizer is not None
        return max(1, longest) * (4 if folds else 1)

    def encode_request(self, request: GenerationRequest) -> list[list[int]]:
        """Token ids of each prompt, after checking the request; raises InvalidRequest."""
        request.check()
        # Every prompt is checked for length in characters before any is tokenized, and each
        # one's tokens as soon as it is: tokenizing megabytes takes seconds under the
        # tokenizer lock, which the other calls and the engine's detokenizing wait for.
        most_chars = self.max_model_len * self.chars_per_token_bound
        for i, prompt in enumerate(request.prompts):
            if len(prompt) >= most_chars:
                raise InvalidRequest(
                    f"prompt {i} has {len(prompt)} characters, more than "
                    f"{self.max_model_len - 1} tokens of this model can hold (max_model_len "
                    f"{self.max_model_len})"
                )
        ids = []
        for i, prompt in enumerate(request.prompts):
            with self.tokenizer_lock:  # per prompt, so that a big call lets others in
                prompt_ids = encode_prompt(self.tokenizer, prompt)
            if not prompt_ids:
                raise InvalidRequest(f"prompt {i} is empty: it encodes to no tokens")
            if len(prompt_ids) >= self.max_model_len:
                raise InvalidRequest(
                    f"prompt {i} has {len(prompt_ids)} tokens; the model accepts at most "
                    f"{self.max_model_len - 1} so that one token can be generated "
                    f"(max_model_len {self.max_model_len})"
                )
            ids.append(prompt_ids)
        return ids

    def chat_template(self) -> ChatTemplate:
        return chat_template_of(self.tokenizer)

    @abstractmethod
    def close(self) -> None: ...


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt that is already final text.

    Chat templates usually write the BOS token themselves, so special tokens are not added
    blindly; BOS is prepended only when the tokenizer adds one by default (as for a raw
    continuation on a Llama base model) and the text does not already start with it.
    """
    ids: list[int] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos and bos_id is not None and not text.startswith(bos):
        default = tokenizer("", add_special_tokens=True)["input_ids"]
        if default[:1] == [bos_id]:
            ids.insert(0, bos_id)
    return ids


def find_stop(text: str, stop: Sequence[str]) -> int:
    """Index where the earliest stop string starts in text, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def derive_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed per (request seed, prompt, sample): rows draw independent streams, and a
    row's stream does not depend on what else shares its batch."""
    digest = hashlib.sha256(f"{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def chat_template_of(tokenizer: Any) -> ChatTemplate:
    template = tokenizer.chat_template
    return ChatTemplate(
        template=template if isinstance(template, str) else "",
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
    )


_SAMPLE_BYTES = 1 << 20


def directory_version(path: str | Path) -> str:
    """`<dir name>#<digest>` of an HF model directory.

    The digest covers every file's name and size and the first and last MiB of its bytes:
    cheap for 100 GB checkpoints, yet different for two saves of different weights.
    """
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        size = file.stat().st_size
        h.update(f"{file.relative_to(root)}:{size}\n".encode())
        with file.open("rb") as f:
            h.update(f.read(_SAMPLE_BYTES))
            if size > _SAMPLE_BYTES:
                f.seek(-_SAMPLE_BYTES, 2)
                h.update(f.read())
    return f"{root.resolve().name}#{h.hexdigest()[:12]}"


@dataclass(eq=False)
class Ticket:
    """One request's place in a running batch; its completions fill in as its rows finish.

    `cancel`, when set by another thread, makes the batch drop the request's rows at its
    next step (the caller gave up); the ticket is then returned as finished, `cancelled`.
    """

    request: GenerationRequest
    cancel: threading.Event | None = None
    completions: list[Completion | None] = field(default_factory=list)
    remaining: int = 0

    def __post_init__(self) -> None:
        rows = len(self.request.prompts) * self.request.params.n
        self.completions = [None] * rows
        self.remaining = rows

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def finish(self, index: int, completion: Completion) -> bool:
        """Record completion `index` (prompt * n + sample); whether the request is complete."""
        self.completions[index] = completion
        self.remaining -= 1
        return self.remaining == 0

    def results(self) -> list[Completion]:
        """Prompt i's n completions at [i*n, (i+1)*n); only once the ticket is complete."""
        done = [c for c in self.completions if c is not None]
        if len(done) != len(self.completions):
            raise RuntimeError("the request has not finished")
        return done


class RunningBatch(Protocol):
    """Requests decoding together; requests join and leave between steps.

    `add` queues a request (checked and encoded now: InvalidRequest is raised here), `step`
    admits queued sequences while fewer than `capacity` decode, runs one decode step and
    returns the tickets that completed (or were cancelled) in it. `rows` counts sequences
    decoding or queued; the batch is drained when it is 0.
    """

    capacity: int

    @property
    def rows(self) -> int: ...

    def add(
        self,
        request: GenerationRequest,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        cancel: threading.Event | None = None,
    ) -> Ticket: ...

    def step(self) -> list[Ticket]: ...


def run_to_completion(
    batch: RunningBatch, requests: Sequence[GenerationRequest]
) -> list[list[Completion]]:
    """`generate_batch` on top of a RunningBatch: add every request, step until drained."""
    tickets = [batch.add(r) for r in requests]
    while batch.rows:
        batch.step()
    return [t.results() for t in tickets]
