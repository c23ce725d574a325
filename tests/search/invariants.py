"""The invariants every finished search tree satisfies, as one checker for tests.

Used by the property tests (random policies and configs) and by the reliability tests
(trees finished by a replica that took over from one killed mid-search).
"""

from __future__ import annotations

import math

from astro_core.search import SearchConfig
from astro_core.search.answers import final_answer
from astro_core.search.store import backed_up_q
from astro_core.trees import SearchTree, TreeNode


def chain_end(node: TreeNode, children: dict[str, list[TreeNode]]) -> TreeNode:
    """The terminal a rollout chain ends at."""
    while children[node.id]:
        [node] = children[node.id]
    return node


def check_tree(
    cfg: SearchConfig, tree: SearchTree, gold: str, tokens: dict[str, int] | None = None
) -> None:
    """Assert the tree's invariants (see tests/search/test_mcts_properties.py). `tokens`
    (node id -> its step's tokens, as the store keeps them) adds the token-budget checks.
    Terminals are judged like ExactVerifier: correct when the stated answer is `gold`."""
    tree.validate()
    nodes, children = tree.by_id(), tree.children()
    assert nodes["0"].visits == cfg.iterations == tree.stats["iterations"]
    for node in tree.nodes:
        kids = [c for c in children[node.id] if c.kind == "step"]
        chains = [c for c in children[node.id] if c.kind == "rollout"]
        if node.kind == "rollout":
            assert node.visits == 0 and not kids
            assert node.terminal == (not chains)  # a chain ends at its terminal
            assert len(chains) <= 1
            continue
        assert node.depth <= cfg.max_depth
        if node.depth == cfg.max_depth:
            assert node.terminal
        if tokens is not None:
            solution = sum(tokens[n.id] for n in tree.path_to(node.id))
            assert solution <= cfg.max_solution_tokens
            if solution == cfg.max_solution_tokens:
                assert node.terminal
        if "[end]" in node.text or (node.id != "0" and not node.text):
            assert node.terminal  # ended with EOS, or empty
        if node.terminal:
            assert not kids and not chains  # never expanded, never rolled out
            assert node.rollout_value == (1.0 if node.correct else 0.0)
        if kids:  # expanded once, into k steps
            assert len(kids) == cfg.k, (node.id, len(kids))
            assert all(k.prior > 0 for k in kids)
            assert math.isclose(sum(k.prior for k in kids), 1.0, abs_tol=1e-9)
        if not node.terminal:
            # M rollouts valued it; a rollout that wrote nothing leaves no chain and scored 0
            assert len(chains) <= cfg.rollouts
            wins = sum(1 for c in chains if chain_end(c, children).correct)
            assert math.isclose(node.rollout_value, wins / cfg.rollouts)
        expected = backed_up_q([(k.q, k.visits) for k in kids], node.rollout_value)
        assert math.isclose(node.q, expected, abs_tol=1e-9), (node.id, node.q, expected)
        assert node.visits >= (1 if node.id != "0" else cfg.iterations)
        # Visits add up: a step starts at 1 (its valuation), its expansion backs it up once,
        # and every later backup through it also backs up one of its children (which started
        # at 1 each). The root starts at 0; an unexpanded non-terminal was never selected.
        if kids:
            expansion = 1 if node.id == "0" else 2
            assert node.visits == sum(k.visits for k in kids) - cfg.k + expansion, node.id
        elif not node.terminal:
            assert node.visits == (0 if node.id == "0" else 1), (node.id, node.visits)
    for node in tree.nodes:
        if node.terminal and final_answer(node.text) is not None:
            assert node.answer == final_answer(node.text)
            assert node.correct is (node.answer == gold)
        else:
            assert node.answer is None and node.correct is None
