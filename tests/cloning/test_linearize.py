"""Algorithm 1 on hand-built and random trees: the invariants of every node sequence."""

from __future__ import annotations

import pytest

from astro_core.cloning.config import CloningConfig
from astro_core.cloning.linearize import (
    Linearization,
    count_moves_back,
    is_ancestor,
    merge_paths,
    same_answer,
    sample_linearizations,
    terminal_pools,
)
from astro_core.trees import ROOT_ID, SearchTree
from tests.cloning.trees import apples_tree, hopeless_tree, lucky_tree, node, random_tree


def check_invariants(tree: SearchTree, lin: Linearization, config: CloningConfig) -> None:
    index = tree.by_id()
    path = lin.node_path
    assert path[0] == ROOT_ID
    assert path[-1] == lin.correct_terminal
    assert index[path[-1]].terminal and index[path[-1]].correct is True
    for before, after in zip(path, path[1:], strict=False):
        if index[after].parent == before:
            continue
        # any other move goes back up, and only right after a wrong terminal
        assert is_ancestor(tree, after, before), (before, after)
        assert before in lin.wrong_terminals
    visited_terminals = [n for n in path if index[n].terminal]
    assert visited_terminals == [*lin.wrong_terminals, lin.correct_terminal]
    assert all(index[n].correct is False for n in lin.wrong_terminals)
    assert 0 <= lin.k <= config.k
    answers = [index[n].answer for n in lin.wrong_terminals]
    for i, a in enumerate(answers):
        assert not any(same_answer(a, b) for b in answers[i + 1 :]), "a wrong answer repeats"
    assert count_moves_back(tree, path) == lin.k


@pytest.mark.parametrize("seed", range(25))
def test_invariants_on_the_hand_built_tree(seed: int) -> None:
    tree, config = apples_tree(), CloningConfig(seed=seed)
    lins = sample_linearizations(tree, config)
    assert [lin.k for lin in lins][:1] == [0]  # the direct trace comes first
    assert sum(lin.k == 0 for lin in lins) == config.direct_traces_per_problem
    assert len({lin.node_path for lin in lins}) == len(lins)
    for lin in lins:
        check_invariants(tree, lin, config)


def test_invariants_on_random_trees() -> None:
    config = CloningConfig(k=3, traces_per_problem=5)
    traced = 0
    for seed in range(60):
        tree = random_tree(seed)
        tree.validate()
        lins = sample_linearizations(tree, config.model_copy(update={"seed": seed}))
        pools = terminal_pools(tree)
        assert bool(lins) == bool(pools.correct)
        traced += bool(lins)
        for lin in lins:
            check_invariants(tree, lin, config)
            # the backtrack lands on the divergence point of the path that follows it
            for position, (before, after) in enumerate(
                zip(lin.node_path, lin.node_path[1:], strict=False)
            ):
                if is_ancestor(tree, after, before):
                    below = lin.node_path[position + 2]
                    assert tree.by_id()[below].parent == after
                    assert not is_ancestor(tree, below, before)
    assert traced >= 20  # the generator makes enough traceable trees to mean something


def test_k_wrong_terminals_are_visited() -> None:
    tree = apples_tree()
    seen_k = set()
    for seed in range(40):
        for lin in sample_linearizations(tree, CloningConfig(seed=seed, k=2)):
            seen_k.add(lin.k)
            assert len(set(lin.wrong_terminals)) == lin.k
    assert seen_k == {0, 1, 2}


def test_equal_wrong_answers_never_share_a_trace() -> None:
    # 0.0.0 says "10" and 0.2 says "10 ": the same answer once normalised
    tree = apples_tree()
    assert same_answer("10", "10 ") and same_answer("\\frac{1}{2}", "\\dfrac{1}{2}")
    assert same_answer("10", "10.0") and same_answer("\\frac{1}{2}", "0.5")  # symbolically
    assert not same_answer("10", "21") and not same_answer("", "5")
    used = set()
    for seed in range(80):
        for lin in sample_linearizations(tree, CloningConfig(seed=seed)):
            assert not {"0.0.0", "0.2"} <= set(lin.wrong_terminals)
            used.update(lin.wrong_terminals)
    assert {"0.0.0", "0.2"} <= used  # both are used, just never together


def test_symbolically_equal_wrong_answers_count_once() -> None:
    tree = SearchTree(
        "halves",
        "Half of 1?",
        "1/2",
        [
            node("0", ""),
            node("0.0", "0.5", terminal=True, answer="0.5", correct=False),
            node("0.1", "1/2", terminal=True, answer="\\frac{1}{2}", correct=False),
            node("0.2", "1/2", terminal=True, answer="\\frac{1}{3}", correct=True),
        ],
    )
    for seed in range(10):
        lins = sample_linearizations(tree, CloningConfig(seed=seed, k=2))
        assert {lin.k for lin in lins} == {0, 1}


def test_tree_without_a_correct_terminal_yields_nothing() -> None:
    assert sample_linearizations(hopeless_tree(), CloningConfig()) == []


def test_tree_without_wrong_terminals_yields_only_direct_sequences() -> None:
    lins = sample_linearizations(lucky_tree(), CloningConfig(direct_traces_per_problem=1))
    assert [lin.node_path for lin in lins] == [("0", "0.0")]


def test_sampling_is_seeded() -> None:
    tree = random_tree(6)  # 2 correct and 13 wrong terminals
    first = sample_linearizations(tree, CloningConfig(seed=1, traces_per_problem=6))
    again = sample_linearizations(tree, CloningConfig(seed=1, traces_per_problem=6))
    assert first == again
    others = [
        sample_linearizations(tree, CloningConfig(seed=s, traces_per_problem=6)) for s in (2, 3)
    ]
    assert any(o != first for o in others)


def test_merge_paths_backtracks_to_the_divergence_point() -> None:
    tree = apples_tree()
    assert merge_paths(tree, ["0.0.1.1", "0.0.1.0"]) == (
        "0",
        "0.0",
        "0.0.1",
        "0.0.1.1",
        "0.0.1",
        "0.0.1.0",
    )
    assert merge_paths(tree, ["0.2", "0.1.1"]) == ("0", "0.2", "0", "0.1", "0.1.1")
    with pytest.raises(ValueError, match="at least one"):
        merge_paths(tree, [])


def test_hostile_wrong_answers_do_not_hang_cloning() -> None:
    """Regression: comparing `(10^{8})!` with `(10^{8})! + 1` ran sympy in-process and never
    returned. The comparison now has the verifier's time limit, past which the two answers
    count as distinct, so both may appear in one trace."""
    import dataclasses
    import time

    tree = apples_tree()
    hostile = {"0.0.0": "(10^{8})!", "0.1.0": "(10^{8})! + 1"}
    tree.nodes = [
        dataclasses.replace(n, answer=hostile[n.id]) if n.id in hostile else n for n in tree.nodes
    ]
    started = time.monotonic()
    assert not same_answer("(10^{8})!", "(10^{8})! + 1")
    lins = sample_linearizations(tree, CloningConfig(seed=0, k=2, traces_per_problem=4))
    assert time.monotonic() - started < 60  # a few 1 s time limits, never a hang
    assert lins and all(lin.correct_terminal in {"0.0.1.0", "0.1.1"} for lin in lins)
    for lin in lins:
        check_invariants(tree, lin, CloningConfig(seed=0, k=2))
