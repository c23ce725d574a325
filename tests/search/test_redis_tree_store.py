"""The Redis TreeStore: same results as the in-memory store, atomic under concurrent backups."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from astro_core.search import MCTS, MemoryTreeStore, StoredNode, TreeHeader
from astro_core.search.store import backed_up_q
from astro_core.trees import TreeNode
from services.coordinator.redis_tree_store import RedisTreeStore
from tests.search.fakes import TEMPLATE, ExactVerifier
from tests.search.test_mcts import PROBLEM, config, hand_script


def test_search_on_redis_matches_memory(redis_handle: Any) -> None:
    store = RedisTreeStore(redis_handle.new_client())
    key = f"test-{uuid.uuid4().hex}"  # the real server may be shared with other test sessions
    [on_redis] = MCTS(hand_script(), ExactVerifier(), store, config(), TEMPLATE).run(
        [PROBLEM], keys=[key]
    )
    [in_memory] = MCTS(hand_script(), ExactVerifier(), MemoryTreeStore(), config(), TEMPLATE).run(
        [PROBLEM]
    )
    assert on_redis.to_dict() == in_memory.to_dict()
    # what Redis holds is what was exported
    loaded = {s.node.id: s.node for s in store.load_nodes(key)}
    assert loaded == on_redis.by_id()
    header = store.header(key)
    assert header is not None and header.stats["iterations"] == 2
    other_root = StoredNode(TreeNode("0", None, 0, "overwritten?", visits=99))
    assert store.create_tree(key, TreeHeader("x", "y", "z"), other_root) is False
    assert {s.node.id: s.node for s in store.load_nodes(key)} == loaded  # nothing overwritten
    store.delete(key)


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_a_created_tree_always_has_its_root(redis_handle: Any, kind: str) -> None:
    """Regression: the header and the root were two writes, so a reader (GetTree, a replica
    taking over) could see a tree without a root node."""
    store = RedisTreeStore(redis_handle.new_client()) if kind == "redis" else MemoryTreeStore()
    key = f"test-{uuid.uuid4().hex}"
    root = TreeNode("0", None, 0, "", visits=3, q=0.5, rollout_value=0.25)
    assert store.create_tree(key, TreeHeader("p", "problem", "1"), StoredNode(root, tokens=7))
    [stored] = store.load_nodes(key)
    assert stored.node == root and stored.tokens == 7
    assert store.header(key) == TreeHeader("p", "problem", "1")
    if isinstance(store, RedisTreeStore):
        store.delete(key)  # the REDIS_URL server may be shared


def test_concurrent_backups_lose_no_update(redis_handle: Any) -> None:
    store = RedisTreeStore(redis_handle.new_client())
    key = f"test-{uuid.uuid4().hex}"
    store.create_tree(
        key,
        TreeHeader("p", "problem", "1"),
        StoredNode(TreeNode("0", None, 0, "", rollout_value=0.5)),
    )
    nodes = [
        TreeNode("0.0", "0", 1, "a", visits=1, q=1.0, rollout_value=1.0),
        TreeNode("0.1", "0", 1, "b", visits=1, q=0.0, rollout_value=0.0),
        TreeNode("0.0.0", "0.0", 2, "c", visits=1, q=0.25, rollout_value=0.25),
    ]
    store.add_nodes(key, [StoredNode(n) for n in nodes])
    paths = [["0", "0.0", "0.0.0"], ["0", "0.1"], ["0", "0.0"]]
    threads, per_thread = 8, 40

    def worker(index: int) -> None:
        own = RedisTreeStore(redis_handle.new_client())  # a connection per thread
        for i in range(per_thread):
            own.backup(key, paths[(index + i) % len(paths)])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result = {s.node.id: s.node for s in store.load_nodes(key)}
    total = threads * per_thread
    uses = {node_id: 0 for node_id in result}
    for index in range(threads):
        for i in range(per_thread):
            for node_id in paths[(index + i) % len(paths)]:
                uses[node_id] += 1
    assert result["0"].visits == total
    for node_id, node in result.items():
        start = 0 if node_id == "0" else 1
        assert node.visits == start + uses[node_id], node_id
    # every Q equals the backup formula over the final children (each node's last backup ran
    # after its children's last change, because a backup walks leaf to root atomically)
    children = {"0": ["0.0", "0.1"], "0.0": ["0.0.0"], "0.1": [], "0.0.0": []}
    for node_id, kids in children.items():
        expected = backed_up_q(
            [(result[k].q, result[k].visits) for k in kids], result[node_id].rollout_value
        )
        assert result[node_id].q == pytest.approx(expected), node_id
    store.delete(key)


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_a_round_lands_whole_for_any_reader(redis_handle: Any, kind: str) -> None:
    """Regression: a round's new nodes and its backups were separate writes, so a replica
    that died between them (or a reader in between) saw an expanded node whose Q ignored
    its children. `commit` writes both at once: every snapshot satisfies the formula."""
    store = RedisTreeStore(redis_handle.new_client()) if kind == "redis" else MemoryTreeStore()
    reader = RedisTreeStore(redis_handle.new_client()) if kind == "redis" else store
    key = f"test-{uuid.uuid4().hex}"
    store.create_tree(key, TreeHeader("p", "problem", "1"), StoredNode(TreeNode("0", None, 0, "")))
    rounds, done, bad = 150, threading.Event(), []

    def read() -> None:
        while not done.is_set():
            nodes = {s.node.id: s.node for s in reader.load_nodes(key)}
            kids: dict[str, list[TreeNode]] = {}
            for node in nodes.values():
                if node.parent is not None:
                    kids.setdefault(node.parent, []).append(node)
            for node_id, node in nodes.items():
                expected = backed_up_q(
                    [(k.q, k.visits) for k in kids.get(node_id, [])], node.rollout_value
                )
                if kids.get(node_id) and abs(node.q - expected) > 1e-9:
                    bad.append(node_id)

    watcher = threading.Thread(target=read)
    watcher.start()
    leaf = "0"
    try:
        for index in range(rounds):  # a chain: each round expands the last leaf into two
            children = [
                TreeNode(f"{leaf}.{i}", leaf, leaf.count(".") + 1, "s", visits=1,
                         q=float(i), rollout_value=float(i))
                for i in range(2)
            ]  # fmt: skip
            path = [".".join(leaf.split(".")[: d + 1]) for d in range(leaf.count(".") + 1)]
            store.commit(key, [StoredNode(c) for c in children], [path])
            leaf = children[index % 2].id
    finally:
        done.set()
        watcher.join()
    assert not bad, f"a reader saw nodes without their backup: {bad[:5]}"
    root = {s.node.id: s.node for s in store.load_nodes(key)}["0"]
    assert root.visits == rounds
    if isinstance(store, RedisTreeStore):
        store.delete(key)
