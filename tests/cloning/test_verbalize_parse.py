"""Verbalization writes the paper's phrases; parsing reads node path and backtracks back."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from astro_core.cloning.config import CloningConfig
from astro_core.cloning.linearize import merge_paths, sample_linearizations, terminal_pools
from astro_core.cloning.parse import (
    count_backtracks,
    count_reflections,
    node_path_from_trace,
    split_trace,
)
from astro_core.cloning.phrases import Phrases
from astro_core.cloning.verbalize import verbalize
from tests.cloning.trees import apples_tree, random_tree

PAPER = Phrases()


def test_default_phrases_are_the_papers_wording() -> None:
    assert PAPER.reflection == "But wait, are we solving the problem correctly so far? Hmm..."
    assert PAPER.unsure == "I'm not sure if we're solving the problem correctly so far."
    assert PAPER.backtrack_to("set up x") == "Let's go back to where we set up x."
    assert PAPER.restart == "Let's restart our solution from the beginning."
    assert PAPER.confident == "Our solution seems to be correct so far."


def test_backtrack_to_an_ancestor_step() -> None:
    tree = apples_tree()
    text = verbalize(tree, merge_paths(tree, ["0.0.1.1", "0.0.1.0"]), PAPER)
    expected_block = (
        f'{PAPER.reflection} {PAPER.unsure} Let\'s go back to where we wrote "Then x + 3 = 7".'
    )
    assert expected_block in text.split("\n\n")
    # the wrong terminal shows its answer boxed before the reflection
    before = text.split(expected_block)[0]
    assert before.rstrip().endswith("Therefore, the final answer is $\\boxed{3}$.")


def test_backtrack_to_the_root_restarts() -> None:
    tree = apples_tree()
    text = verbalize(tree, merge_paths(tree, ["0.1.0", "0.0.1.0"]), PAPER)
    assert f"{PAPER.reflection} {PAPER.unsure} {PAPER.restart}" in text
    assert "Let's go back to where we" not in text


def test_positive_reflection_follows_high_q_steps_and_the_final_step() -> None:
    tree = apples_tree()  # 0.0 has Q 0.95, 0.0.1 has 0.92, 0.1 has 0.4
    positive = PAPER.positive_reflection()
    blocks = verbalize(tree, merge_paths(tree, ["0.0.1.0"]), PAPER).split("\n\n")
    assert blocks == [
        "Let x be the number of apples Alice has.",
        positive,
        "Then x + 3 = 7.",
        positive,
        "So x = 4, the answer is $\\boxed{4}$.",
        positive,
    ]
    low_q = verbalize(tree, merge_paths(tree, ["0.1.1"]), PAPER).split("\n\n")
    assert low_q == [
        "Alice ends with 7 apples after getting 3 more.",
        "She had 7 - 3 apples before.",
        "That is $\\boxed{4}$.",
        positive,
    ]
    none = verbalize(tree, merge_paths(tree, ["0.0.1.0"]), PAPER, high_q_threshold=2.0)
    assert none.count(positive) == 1  # only after the final step


def test_direct_style_writes_steps_only() -> None:
    tree = apples_tree()
    text = verbalize(tree, merge_paths(tree, ["0.0.1.0"]), PAPER, style="direct")
    assert text.split("\n\n") == [
        "Let x be the number of apples Alice has.",
        "Then x + 3 = 7.",
        "So x = 4, the answer is $\\boxed{4}$.",
    ]
    with pytest.raises(ValueError, match="cannot go back"):
        verbalize(tree, merge_paths(tree, ["0.2", "0.0.1.0"]), PAPER, style="direct")


def traceable_trees() -> list:
    trees = [apples_tree()] + [random_tree(seed) for seed in range(40)]
    return [t for t in trees if terminal_pools(t).correct]


def test_traces_parse_back_to_node_path_and_backtracks() -> None:
    checked = 0
    for tree in traceable_trees():
        for seed in range(3):
            config = CloningConfig(seed=seed, k=3, traces_per_problem=4)
            for lin in sample_linearizations(tree, config):
                text = verbalize(tree, lin.node_path, PAPER)
                assert node_path_from_trace(text, tree) == list(lin.node_path)
                assert count_backtracks(text) == lin.k
                kinds = [s.kind for s in split_trace(text)]
                assert kinds.count("unsure") == lin.k
                assert kinds[-1] == "confident"
                checked += 1
    assert checked > 100


def test_custom_phrases_round_trip() -> None:
    phrases = Phrases(
        reflection="Hold on, let me check this.",
        unsure="Something is off.",
        confident="Looks right.",
        backtrack="Back to the point where we {description}!",
        restart="From the top.",
        step_reference="said <{excerpt}>",
    )
    tree = apples_tree()
    path = merge_paths(tree, ["0.0.0", "0.0.1.1", "0.1.1"])
    text = verbalize(tree, path, phrases)
    assert "Back to the point where we said <Let x be the number of apples Alice has>!" in text
    assert "From the top." in text and "But wait" not in text
    assert node_path_from_trace(text, tree, phrases) == list(path)
    assert count_backtracks(text, phrases) == 2


def test_phrase_templates_are_validated() -> None:
    with pytest.raises(ValidationError, match="description"):
        Phrases(backtrack="Let's go back.")
    with pytest.raises(ValidationError, match="answer"):
        Phrases(final_answer="The answer is boxed.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Let x = 3. So x + 1 = 4. The answer is $\\boxed{4}$.", 0),
        ("x = 3.5 is wrong. Let me go back to the step where we set x. Then x = 2.", 1),
        ("Hmm. Let\u2019s go back to where we defined y.", 1),  # curly apostrophe
        ("That fails. Let's start over. Try y = 2. Wrong again; let us backtrack to y.", 2),
        ("We should restart our solution. Going back to where we began, let's go back.", 2),
        (f"{PAPER.reflection} {PAPER.unsure} {PAPER.restart}", 1),
    ],
)
def test_count_backtracks_on_paraphrases(text: str, expected: int) -> None:
    assert count_backtracks(text) == expected


def test_paraphrase_patterns_are_configurable() -> None:
    phrases = Phrases(backtrack_patterns=[r"\bretreat to\b"], restart_patterns=[])
    text = "We retreat to step 2. Let's start over."
    assert count_backtracks(text, phrases) == 1
    assert count_backtracks(text) == 1  # the defaults see the restart, not the retreat


def test_split_model_output_into_kinds() -> None:
    output = (
        "First, 2 + 2 = 5.\n\nBut wait, is that right? I'm not sure about it. "
        "Let me go back to the addition.\n\n2 + 2 = 4. This seems correct so far."
    )
    segments = split_trace(output)
    assert [s.kind for s in segments] == [
        "step",
        "reflection",
        "unsure",
        "backtrack",
        "step",
        "confident",
    ]
    assert segments[3].text == "Let me go back to the addition."
    assert count_reflections(output) == 1


def test_a_trace_that_does_not_fit_the_tree_is_rejected() -> None:
    tree = apples_tree()
    with pytest.raises(ValueError, match="does not continue node 0.0"):
        node_path_from_trace("Let x be the number of apples Alice has.\n\nx = 99.", tree)
    text = verbalize(tree, merge_paths(tree, ["0.0.1.1", "0.0.1.0"]), PAPER)
    broken = text.replace('wrote "Then x + 3 = 7"', 'wrote "Then x + 4 = 7"')
    with pytest.raises(ValueError, match="matches"):
        node_path_from_trace(broken, tree)
