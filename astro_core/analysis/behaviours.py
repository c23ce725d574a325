"""Counting search behaviour in a response: self-reflections, verdicts, backtracks, restarts.

The phrase set is cloning's (`astro_core.cloning.phrases.Phrases`) and the parser is
cloning's (`astro_core.cloning.parse.split_trace`), so a trace that cloning wrote counts
exactly the backtracks its tree walk made, and a trained model's paraphrases ("Let me go back
to ...", "Let's start over.") count through the configurable `*_patterns` of `Phrases`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from astro_core.cloning.parse import split_trace
from astro_core.cloning.phrases import Phrases

_DEFAULT_PHRASES = Phrases()


@dataclass(frozen=True)
class BehaviourCounts:
    """What one response does besides stating steps."""

    steps: int = 0
    reflections: int = 0  # the self-reflection question ("But wait, ... Hmm...")
    positive_verdicts: int = 0  # "Our solution seems to be correct so far."
    negative_verdicts: int = 0  # "I'm not sure if we're solving the problem correctly ..."
    backtracks: int = 0  # every move back: to an earlier step or to the beginning
    restarts: int = 0  # the moves back to the beginning (included in backtracks)


def count_behaviours(
    text: str, phrases: Phrases | None = None, paraphrases: bool = True
) -> BehaviourCounts:
    """Count the segments of `text` by kind (exact phrases, plus paraphrases unless turned off)."""
    kinds = Counter(s.kind for s in split_trace(text, phrases or _DEFAULT_PHRASES, paraphrases))
    return BehaviourCounts(
        steps=kinds["step"],
        reflections=kinds["reflection"],
        positive_verdicts=kinds["confident"],
        negative_verdicts=kinds["unsure"],
        backtracks=kinds["backtrack"] + kinds["restart"],
        restarts=kinds["restart"],
    )
