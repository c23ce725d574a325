"""Finding a final answer in a step: the one place search depends on answer extraction."""

from __future__ import annotations

from astro_core.answers import extract_answer


def final_answer(text: str) -> str | None:
    """The final answer a step states (its last \\boxed{}, or "the final answer is X"), or None.

    Fallbacks (the last number, a short step taken whole) do not count: a step that merely
    mentions a number is not a terminal.
    """
    found = extract_answer(text, fallback="none")
    if found.source in ("boxed", "final_answer") and found.answer:
        return found.answer
    return None
