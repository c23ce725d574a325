"""Tree invariants of the MCTS as properties, over random configs and random policies.

Hypothesis draws a SearchConfig and a RandomPolicy (tests/search/fakes.py: random steps that
may answer right or wrong, end with EOS, come back empty or run out of budget) and runs a
search, sometimes cut after a few rounds and resumed from the store by a fresh driver. Every
finished tree must then satisfy, node by node:

- the root's visits equal the iterations, and every node's visits add up: an expanded node's
  are its children's sum less their k starting visits, plus its own valuation and expansion;
- every expanded node has exactly k step children whose priors are positive and sum to 1;
- Q(s) = (sum over step children of Q*N + rollout_value(s)) / (sum of children N + 1);
- a valued node's rollout_value is the share of its M rollouts that ended correct, and a
  terminal's is its own verdict;
- every answer's `correct` flag is the verifier's verdict on it; no answer, no verdict;
- no step runs a solution past max_solution_tokens or max_depth, no call gives a prompt
  more tokens than its solution has left (checked by the policy on every call), and no
  solution the model ended with EOS is continued;
- each round's parallel selections end at distinct leaves, as many as the tree offers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astro_core.problems import Problem
from astro_core.search import MCTS, MemoryTreeStore, SearchConfig, TreeSearch
from astro_core.search.store import StoredNode, TreeHeader, TreeStore
from astro_core.trees import SearchTree
from tests.search.fakes import TEMPLATE, ExactVerifier, RandomPolicy
from tests.search.invariants import check_tree

GOLD = "1"
PROBLEM = Problem(id="p", problem="What is one?", answer=GOLD)


@st.composite
def search_configs(draw: st.DrawFn) -> SearchConfig:
    step = draw(st.integers(1, 10))
    return SearchConfig(
        c_puct=draw(st.sampled_from([0.0, 0.5, 2.0, 4.0])),
        k=draw(st.integers(1, 4)),
        rollouts=draw(st.integers(1, 4)),
        iterations=draw(st.integers(1, 12)),
        max_depth=draw(st.integers(1, 6)),
        max_step_tokens=step,
        max_solution_tokens=step + draw(st.integers(0, 30)),
        parallel_selections=draw(st.integers(1, 4)),
        virtual_loss=draw(st.sampled_from([0.0, 1.0, 3.0])),
        seed=0,
    )


class RecordingStore:
    """A TreeStore that passes everything to another and records each backed-up path."""

    def __init__(self, inner: TreeStore) -> None:
        self.inner = inner
        self.paths: list[list[str]] = []

    def create_tree(self, key: str, header: TreeHeader, root: StoredNode) -> bool:
        return self.inner.create_tree(key, header, root)

    def header(self, key: str) -> TreeHeader | None:
        return self.inner.header(key)

    def add_nodes(self, key: str, nodes: Sequence[StoredNode]) -> None:
        self.inner.add_nodes(key, nodes)

    def backup(self, key: str, path: Sequence[str]) -> dict[str, tuple[int, float]]:
        self.paths.append(list(path))
        return self.inner.backup(key, path)

    def commit(
        self,
        key: str,
        nodes: Sequence[StoredNode],
        paths: Sequence[Sequence[str]],
        root_visits: int | None = None,
    ) -> dict[str, tuple[int, float]]:
        self.paths += [list(path) for path in paths]
        return self.inner.commit(key, nodes, paths, root_visits)

    def load_nodes(self, key: str) -> list[StoredNode]:
        return self.inner.load_nodes(key)

    def set_stats(self, key: str, stats: dict[str, Any]) -> None:
        self.inner.set_stats(key, stats)


@dataclass
class Round:
    offered: int  # leaves the tree had when the round began
    budget: int  # selections the round could make
    selected: list[str] = field(default_factory=list)


def leaves(tree: TreeSearch) -> list[str]:
    return [
        n.id
        for n in tree.nodes.values()
        if n.kind == "step" and (n.terminal or not tree.kids[n.id])
    ]


def run_rounds(driver: MCTS, tree: TreeSearch, store: RecordingStore, rounds: list[Round],
               limit: int | None = None) -> None:  # fmt: skip
    """Step the tree until it is done (or `limit` rounds), recording each round."""
    cfg = driver.config
    while not driver.is_done(tree) and (limit is None or limit > 0):
        budget = min(cfg.parallel_selections, cfg.iterations - tree.iterations_done)
        record = Round(offered=len(leaves(tree)), budget=budget)
        before = len(store.paths)
        driver.step([tree])
        record.selected = [path[-1] for path in store.paths[before:]]
        rounds.append(record)
        limit = None if limit is None else limit - 1


def search(
    cfg: SearchConfig, seed: int, inner: TreeStore, key: str, cut_after: int | None
) -> tuple[SearchTree, RecordingStore, list[Round]]:
    policy = RandomPolicy(seed, cfg.max_step_tokens, cfg.max_solution_tokens)
    store = RecordingStore(inner)
    rounds: list[Round] = []
    driver = MCTS(policy, ExactVerifier(), store, cfg, TEMPLATE)
    tree = driver.open_tree(PROBLEM, key)
    run_rounds(driver, tree, store, rounds, limit=cut_after)
    if cut_after is not None:  # a fresh driver (another replica) resumes from the store
        driver = MCTS(policy, ExactVerifier(), store, cfg, TEMPLATE)
        tree = driver.open_tree(PROBLEM, key)
        run_rounds(driver, tree, store, rounds)
    return driver.finish(tree), store, rounds


def check_invariants(
    cfg: SearchConfig, tree: SearchTree, tokens: dict[str, int], rounds: list[Round]
) -> None:
    check_tree(cfg, tree, GOLD, tokens)
    assert sum(r.budget for r in rounds) >= cfg.iterations
    for record in rounds:
        assert len(set(record.selected)) == len(record.selected)  # distinct leaves
        assert len(record.selected) == min(record.budget, record.offered)


def stored_tokens(store: TreeStore, key: str) -> dict[str, int]:
    return {s.node.id: s.tokens for s in store.load_nodes(key)}


@settings(max_examples=150, deadline=None)
@given(cfg=search_configs(), seed=st.integers(0, 10**6), cut=st.none() | st.integers(1, 3))
def test_tree_invariants_hold_for_any_policy(cfg: SearchConfig, seed: int, cut: int | None) -> None:
    inner = MemoryTreeStore()
    tree, store, rounds = search(cfg, seed, inner, "k", cut)
    check_invariants(cfg, tree, stored_tokens(inner, "k"), rounds)


@pytest.fixture(scope="module")
def redis_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TreeStore]:
    from services.coordinator.redis_tree_store import RedisTreeStore
    from services.runtime.redis_store import connect_redis

    with connect_redis(None, tmp_path_factory.mktemp("redis")) as handle:
        yield RedisTreeStore(handle.new_client())


_keys = iter(range(10**9))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cfg=search_configs(), seed=st.integers(0, 10**6), cut=st.none() | st.integers(1, 3))
def test_tree_invariants_hold_on_redis(
    redis_store: TreeStore, cfg: SearchConfig, seed: int, cut: int | None
) -> None:
    """The same on the Redis store, whose backups are a Lua script."""
    key = f"prop:{next(_keys)}"
    tree, store, rounds = search(cfg, seed, redis_store, key, cut)
    check_invariants(cfg, tree, stored_tokens(redis_store, key), rounds)
