"""Counting reflections and backtracks: cloning's exact phrases, paraphrases, custom patterns."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from astro_core.analysis import count_behaviours
from astro_core.cloning.config import CloningConfig
from astro_core.cloning.dataset import clone_tree
from astro_core.cloning.linearize import count_moves_back
from astro_core.cloning.parse import (
    _SENTENCE_END,
    _SENTENCE_START,
    _sentence_span,
    _sentence_starts,
)
from astro_core.cloning.phrases import Phrases
from tests.cloning.trees import apples_tree, random_tree

PAPER = Phrases()


@pytest.mark.parametrize("style", ["astro", "direct"])
def test_round_trip_clone_then_count_gives_the_trees_backtracks(style: str) -> None:
    trees = [apples_tree()] + [random_tree(seed) for seed in range(12)]
    config = CloningConfig(self_eval=False, k=3, traces_per_problem=4)
    checked = 0
    for tree in trees:
        records, _ = clone_tree(tree, config, style="astro" if style == "astro" else "direct")
        for record in records:
            counts = count_behaviours(record.trace)
            assert (
                counts.backtracks == record.backtracks == count_moves_back(tree, record.node_path)
            )
            restarts = sum(
                b == "0" for a, b in zip(record.node_path, record.node_path[1:], strict=False)
            )
            assert counts.restarts == restarts
            assert counts.negative_verdicts == record.backtracks
            assert counts.positive_verdicts == record.trace.count(PAPER.confident)
            assert counts.reflections == record.trace.count(PAPER.reflection)
            checked += 1
            if style == "direct":
                assert counts == count_behaviours(record.trace, paraphrases=False)
                assert counts.backtracks == counts.reflections == 0
    assert checked > 20


def test_the_exact_phrases_cloning_writes() -> None:
    text = "\n\n".join(
        [
            "Let x be 3.",
            PAPER.positive_reflection(),
            "Then x + 1 = 5.",
            PAPER.negative_reflection(PAPER.backtrack_to('wrote "Let x be 3"')),
            "Then x + 1 = 4.",
            PAPER.negative_reflection(PAPER.restart),
            "We have $\\boxed{4}$.",
            PAPER.positive_reflection(),
        ]
    )
    counts = count_behaviours(text)
    assert (counts.backtracks, counts.restarts) == (2, 1)
    assert (counts.reflections, counts.positive_verdicts, counts.negative_verdicts) == (4, 2, 2)
    assert counts.steps == 4


@pytest.mark.parametrize(
    ("response", "backtracks", "restarts", "reflections", "positive"),
    [
        ("x = 2.\n\nWait, let me go back to where I set up the equation.\n\nx = 3.", 1, 0, 0, 0),
        ("x = 2. Hmm, that fails. Let's start over.\n\nTry y = 1.", 1, 1, 0, 0),
        ("x = 2.\n\nLet us backtrack to the second step.\n\nx = 5.", 1, 0, 0, 0),
        ("But wait, is this right? It seems to be correct so far.\n\nSo \\boxed{2}.", 0, 0, 1, 1),
        ("We go back to the original equation and substitute.", 0, 0, 0, 0),
        ("Step back from the edge: 3 + 4 = 7, so \\boxed{7}.", 0, 0, 0, 0),
        ("Let me restart my approach.\n\nBacktracking again, we get 5.", 2, 1, 0, 0),
        (
            "BUT WAIT, ARE WE SOLVING THE PROBLEM CORRECTLY SO FAR? Let’s go back to step 1.",
            1,
            0,
            1,
            0,
        ),
    ],
)
def test_paraphrases_a_trained_model_writes(
    response: str, backtracks: int, restarts: int, reflections: int, positive: int
) -> None:
    counts = count_behaviours(response)
    assert (counts.backtracks, counts.restarts) == (backtracks, restarts)
    assert (counts.reflections, counts.positive_verdicts) == (reflections, positive)


def test_paraphrases_can_be_turned_off_and_patterns_configured() -> None:
    text = "x = 2.\n\nScratch that, x = 3.\n\nLet me go back to where x was set."
    assert count_behaviours(text).backtracks == 1
    assert count_behaviours(text, paraphrases=False).backtracks == 0
    custom = Phrases(backtrack_patterns=[r"\bscratch that\b"])
    assert count_behaviours(text, custom).backtracks == 1  # only the configured pattern now
    wider = Phrases(backtrack_patterns=[*PAPER.backtrack_patterns, r"\bscratch that\b"])
    assert count_behaviours(text, wider).backtracks == 2


def reference_sentence_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence around a match, found by scanning from the text's start every time (the
    definition; what cloning's parser did before it found the boundaries once per text)."""
    begin = 0
    for boundary in _SENTENCE_START.finditer(text, 0, start):
        begin = boundary.end()
    if text[end - 1 : end] in (".", "!", "?"):
        return begin, end
    stop = _SENTENCE_END.search(text, end)
    return begin, (stop.end() if stop else len(text))


@given(st.text(alphabet="ab .!?\n\t", max_size=60), st.data())
def test_sentence_spans_match_the_definition(text: str, data: st.DataObject) -> None:
    assume(text)
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    starts = _sentence_starts(text)
    assert _sentence_span(text, start, end, starts) == reference_sentence_span(text, start, end)


@pytest.mark.timeout(60)
def test_counting_a_long_repetitive_response_stays_fast() -> None:
    # An RL policy that loops writes the same reflection thousands of times; finding each
    # match's sentence by rescanning the text was quadratic (minutes for this one).
    text = "We check it. But wait, is that right? Let me go back to the start.\n\n" * 20000
    counts = count_behaviours(text)
    assert counts.reflections == 20000 and counts.backtracks == 20000
