"""Search trees as files: the export format that search writes and cloning and graphs read.

One JSON object per tree per line (JSONL):

    {"problem_id", "problem", "gold", "config": {...}, "nodes": [node, ...], "stats": {...}}

with each node

    {"id", "parent", "depth", "text", "kind": "step"|"rollout", "prior", "visits", "q",
     "rollout_value", "terminal", "answer", "correct"}

The root has id "0", parent null, depth 0 and empty text (it stands for the problem).
A child's id is its parent's id plus "." and its index ("0.3.1"), so a path can be read from
an id. `answer` is null unless the node is a terminal with an extracted final answer;
`correct` is null unless that answer was verified. See docs/tree-format.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

NodeKind = Literal["step", "rollout"]
ROOT_ID = "0"


@dataclass
class TreeNode:
    id: str
    parent: str | None
    depth: int
    text: str
    kind: NodeKind = "step"
    prior: float = 1.0
    visits: int = 0
    q: float = 0.0
    rollout_value: float = 0.0
    terminal: bool = False
    answer: str | None = None
    correct: bool | None = None


@dataclass
class SearchTree:
    problem_id: str
    problem: str
    gold: str
    nodes: list[TreeNode]
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def by_id(self) -> dict[str, TreeNode]:
        return {node.id: node for node in self.nodes}

    def children(self) -> dict[str, list[TreeNode]]:
        """Children of each node id, in id order."""
        result: dict[str, list[TreeNode]] = {node.id: [] for node in self.nodes}
        for node in self.nodes:
            if node.parent is not None:
                result[node.parent].append(node)
        return result

    def path_to(self, node_id: str) -> list[TreeNode]:
        """Nodes from the root to node_id, both included."""
        index = self.by_id()
        path = []
        current: str | None = node_id
        while current is not None:
            node = index[current]
            path.append(node)
            current = node.parent
        return path[::-1]

    def terminals(self) -> list[TreeNode]:
        return [node for node in self.nodes if node.terminal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "problem": self.problem,
            "gold": self.gold,
            "config": self.config,
            "nodes": [asdict(node) for node in self.nodes],
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchTree:
        tree = cls(
            problem_id=str(data["problem_id"]),
            problem=str(data["problem"]),
            gold=str(data["gold"]),
            nodes=[TreeNode(**node) for node in data["nodes"]],
            config=dict(data.get("config") or {}),
            stats=dict(data.get("stats") or {}),
        )
        tree.validate()
        return tree

    def validate(self) -> None:
        """Raise ValueError naming the first broken invariant of the format."""
        index: dict[str, TreeNode] = {}
        for node in self.nodes:
            if node.id in index:
                raise ValueError(f"tree {self.problem_id}: duplicate node id {node.id!r}")
            index[node.id] = node
        if ROOT_ID not in index or index[ROOT_ID].parent is not None:
            raise ValueError(f"tree {self.problem_id}: no root node with id {ROOT_ID!r}")
        for node in self.nodes:
            if node.kind not in ("step", "rollout"):
                raise ValueError(f"tree {self.problem_id}: node {node.id} has kind {node.kind!r}")
            if node.parent is None:
                if node.id != ROOT_ID:
                    raise ValueError(f"tree {self.problem_id}: node {node.id} has no parent")
                continue
            parent = index.get(node.parent)
            if parent is None:
                raise ValueError(f"tree {self.problem_id}: node {node.id} has unknown parent")
            if node.depth != parent.depth + 1:
                raise ValueError(f"tree {self.problem_id}: node {node.id} has depth {node.depth}")


def read_trees(path: str | Path) -> Iterator[SearchTree]:
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield SearchTree.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a valid tree: {exc}") from exc


def write_trees(path: str | Path, trees: list[SearchTree]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for tree in trees:
            handle.write(json.dumps(tree.to_dict(), ensure_ascii=False) + "\n")
