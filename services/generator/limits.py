"""Bounds on one Generate call, so that no call can take the generator's memory or time.

Checked before a call is queued: a call over a bound is refused whole and never reaches the
engine, so the calls decoding beside it are not disturbed. Shape bounds (n, max_tokens,
prompts, stop strings) are INVALID_ARGUMENT: the call can never be served as asked. The
token total (prompt + generated, summed over every sequence) is RESOURCE_EXHAUSTED: the
call asks for more work than one call may. So is a response larger than one gRPC message
(max_message_bytes), after the work: a sound bound before it would refuse calls that fit (a
token of a large vocabulary may decode to 100+ bytes, most decode to a few, and most
completions stop before max_tokens). Each message names the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from astro_core.engines import GenerationRequest, InvalidRequest


class CallTooLarge(Exception):
    """The call asks for more tokens than one call may, or its response is larger than one
    message may be (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class CallLimits:
    """The bounds, from GeneratorSettings (see the field descriptions there)."""

    max_n: int
    max_new_tokens: int
    max_prompts: int
    max_stop_strings: int
    max_stop_chars: int
    max_call_tokens: int
    max_response_bytes: int  # the server's max_message_bytes

    def check_shape(self, request: GenerationRequest) -> None:
        """Raise InvalidRequest naming the first bound the request's fields exceed."""
        params = request.params
        if params.n > self.max_n:
            raise InvalidRequest(f"n={params.n} exceeds the limit max_n={self.max_n}")
        largest = max(request.max_tokens, default=params.max_tokens)
        if largest > self.max_new_tokens:
            raise InvalidRequest(
                f"max_tokens={largest} exceeds the limit max_new_tokens={self.max_new_tokens}"
            )
        if len(request.prompts) > self.max_prompts:
            raise InvalidRequest(
                f"{len(request.prompts)} prompts exceed the limit max_prompts={self.max_prompts}"
            )
        if len(params.stop) > self.max_stop_strings:
            raise InvalidRequest(
                f"{len(params.stop)} stop strings exceed the limit "
                f"max_stop_strings={self.max_stop_strings}"
            )
        longest = max((len(s) for s in params.stop), default=0)
        if longest > self.max_stop_chars:
            raise InvalidRequest(
                f"a stop string of {longest} characters exceeds the limit "
                f"max_stop_chars={self.max_stop_chars}"
            )

    def check_tokens(
        self, request: GenerationRequest, prompt_ids: Sequence[Sequence[int]], max_model_len: int
    ) -> int:
        """The call's token total: each prompt's tokens plus its budget (capped by the
        model's context), times n. Raises CallTooLarge above max_call_tokens."""
        total = 0
        for i, ids in enumerate(prompt_ids):
            budget = min(request.budget(i), max_model_len - len(ids))
            total += request.params.n * (len(ids) + max(budget, 0))
        if total > self.max_call_tokens:
            raise CallTooLarge(
                f"the call needs up to {total} tokens (prompt + max_tokens, times n, summed "
                f"over prompts), over the limit max_call_tokens={self.max_call_tokens}; "
                "split it into smaller calls"
            )
        return total

    def check_response(self, size: int, completions: int) -> None:
        """Raise CallTooLarge when a response of `size` bytes cannot be sent in one message
        (gRPC would fail it with a message naming neither the call nor the setting)."""
        if size > self.max_response_bytes:
            raise CallTooLarge(
                f"the response of {completions} completions is {size} bytes, over the message "
                f"limit max_message_bytes={self.max_response_bytes}; split the call into "
                "smaller ones or lower max_tokens"
            )
