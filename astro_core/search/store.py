"""Where search trees live while they grow: the TreeStore seam and an in-memory store.

A store keeps, per tree key, a header (problem, gold, config, stats) and the nodes, each
written as it is created. Visit counts and values change only through `backup`, which a
store must apply atomically: two workers backing up through the same node never lose an
update. The search writes a round with `commit`: its new nodes and its backups together,
so a process that dies mid-round leaves no expanded node whose Q ignores its children.
The Redis implementation (services/coordinator/redis_tree_store.py) does this with Lua
scripts in one MULTI/EXEC; this in-memory one with a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from astro_core.trees import ROOT_ID, TreeNode


class TreeConflict(RuntimeError):
    """A round committed on a stale view of its tree: another worker committed to the tree
    since this one read it (it took the tree over while this one stalled). Nothing of the
    round was written; the tree is the other worker's now."""


@dataclass
class TreeHeader:
    """What a tree is about; stats are filled in as the search goes."""

    problem_id: str
    problem: str
    gold: str
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredNode:
    """A node plus the tokens of its step (needed to enforce max_solution_tokens on resume)."""

    node: TreeNode
    tokens: int = 0


def id_order(node_id: str) -> tuple[int, ...]:
    """Sort key that puts parents before children and siblings in index order."""
    return tuple(int(part) for part in node_id.split("."))


def backed_up_q(children: Sequence[tuple[float, int]], rollout_value: float) -> float:
    """Q(s) = (sum over step children of Q*N + own rollout value) / (sum of children N + 1)."""
    weighted = sum(q * n for q, n in children)
    visits = sum(n for _, n in children)
    return (weighted + rollout_value) / (visits + 1)


@runtime_checkable
class TreeStore(Protocol):
    def create_tree(self, key: str, header: TreeHeader, root: StoredNode) -> bool:
        """Write the header and the root node together (a reader never sees a tree without
        its root) unless the tree exists; True when it was created now."""
        ...

    def header(self, key: str) -> TreeHeader | None: ...

    def add_nodes(self, key: str, nodes: Sequence[StoredNode]) -> None:
        """Write new nodes (all or none). Step children join their parent's child list."""
        ...

    def backup(self, key: str, path: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Atomically, from the last id of path (a leaf) up to the first (the root): N += 1,
        then Q recomputed by `backed_up_q` over the node's step children. Returns the new
        (visits, q) of every node on the path."""
        ...

    def commit(
        self,
        key: str,
        nodes: Sequence[StoredNode],
        paths: Sequence[Sequence[str]],
        root_visits: int | None = None,
    ) -> dict[str, tuple[int, float]]:
        """Atomically, one round: `add_nodes(nodes)`, then `backup` of each path in order.
        Returns the final (visits, q) of every node on the paths. With `root_visits` (the
        root's visits the round was planned on) it writes nothing and raises TreeConflict
        unless the stored root has exactly those visits: every commit backs up through the
        root, so any other worker's commit since changed them."""
        ...

    def load_nodes(self, key: str) -> list[StoredNode]:
        """Every node of the tree with its current visits and q, parents before children."""
        ...

    def set_stats(self, key: str, stats: dict[str, Any]) -> None: ...


class MemoryTreeStore:
    """TreeStore in a dict, for tests and single-process runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._headers: dict[str, TreeHeader] = {}
        self._nodes: dict[str, dict[str, StoredNode]] = {}
        self._kids: dict[str, dict[str, list[str]]] = {}

    def create_tree(self, key: str, header: TreeHeader, root: StoredNode) -> bool:
        with self._lock:
            if key in self._headers:
                return False
            self._headers[key] = replace(header)
            self._nodes[key] = {root.node.id: StoredNode(replace(root.node), root.tokens)}
            self._kids[key] = {}
            return True

    def header(self, key: str) -> TreeHeader | None:
        with self._lock:
            found = self._headers.get(key)
            return replace(found) if found else None

    def add_nodes(self, key: str, nodes: Sequence[StoredNode]) -> None:
        with self._lock:
            self._add(key, nodes)

    def backup(self, key: str, path: Sequence[str]) -> dict[str, tuple[int, float]]:
        with self._lock:
            return self._backup(key, path)

    def commit(
        self,
        key: str,
        nodes: Sequence[StoredNode],
        paths: Sequence[Sequence[str]],
        root_visits: int | None = None,
    ) -> dict[str, tuple[int, float]]:
        with self._lock:
            stored = self._nodes[key][ROOT_ID].node.visits
            if root_visits is not None and stored != root_visits:
                raise TreeConflict(
                    f"tree {key}: the root has {stored} visits, the round expected {root_visits}"
                )
            self._add(key, nodes)
            result: dict[str, tuple[int, float]] = {}
            for path in paths:
                result.update(self._backup(key, path))
            return result

    def _add(self, key: str, nodes: Sequence[StoredNode]) -> None:
        table, kids = self._nodes[key], self._kids[key]
        for stored in nodes:
            node = stored.node
            table[node.id] = StoredNode(replace(node), stored.tokens)
            if node.parent is not None and node.kind == "step":
                kids.setdefault(node.parent, []).append(node.id)

    def _backup(self, key: str, path: Sequence[str]) -> dict[str, tuple[int, float]]:
        table, kids = self._nodes[key], self._kids[key]
        result: dict[str, tuple[int, float]] = {}
        for node_id in reversed(path):
            node = table[node_id].node
            node.visits += 1
            children = [(table[c].node.q, table[c].node.visits) for c in kids.get(node_id, [])]
            node.q = backed_up_q(children, node.rollout_value)
            result[node_id] = (node.visits, node.q)
        return result

    def load_nodes(self, key: str) -> list[StoredNode]:
        with self._lock:
            nodes = [
                StoredNode(replace(s.node), s.tokens) for s in self._nodes.get(key, {}).values()
            ]
        return sorted(nodes, key=lambda s: s.node.depth)

    def set_stats(self, key: str, stats: dict[str, Any]) -> None:
        with self._lock:
            self._headers[key].stats = dict(stats)
