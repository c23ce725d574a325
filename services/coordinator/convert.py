"""Search trees and statuses between astro_core and the astro.v1 messages.

The proto Node has no nulls: parent "" is the root's null, answer "" is null, and `correct`
is null exactly when there is no answer (every answer the search records was verified).
"""

from __future__ import annotations

import json

from astro_core.trees import SearchTree, TreeNode
from services.coordinator.jobs import JobStatus
from services.protos.astro.v1 import common_pb2, search_pb2


def tree_to_proto(tree: SearchTree) -> common_pb2.Tree:
    return common_pb2.Tree(
        problem_id=tree.problem_id,
        problem=tree.problem,
        gold=tree.gold,
        config_json=json.dumps(tree.config),
        stats_json=json.dumps(tree.stats),
        nodes=[
            common_pb2.Node(
                id=n.id,
                parent=n.parent or "",
                depth=n.depth,
                text=n.text,
                kind=n.kind,
                prior=n.prior,
                visits=n.visits,
                q=n.q,
                rollout_value=n.rollout_value,
                terminal=n.terminal,
                answer=n.answer or "",
                correct=bool(n.correct),
            )
            for n in tree.nodes
        ],
    )


def tree_from_proto(message: common_pb2.Tree) -> SearchTree:
    nodes = []
    for n in message.nodes:
        answer = n.answer or None
        nodes.append(
            TreeNode(
                id=n.id,
                parent=n.parent or None,
                depth=n.depth,
                text=n.text,
                kind="rollout" if n.kind == "rollout" else "step",
                prior=n.prior,
                visits=n.visits,
                q=n.q,
                rollout_value=n.rollout_value,
                terminal=n.terminal,
                answer=answer,
                correct=n.correct if answer is not None else None,
            )
        )
    tree = SearchTree(
        problem_id=message.problem_id,
        problem=message.problem,
        gold=message.gold,
        nodes=nodes,
        config=json.loads(message.config_json or "{}"),
        stats=json.loads(message.stats_json or "{}"),
    )
    tree.validate()
    return tree


def status_to_proto(status: JobStatus) -> search_pb2.SearchStatus:
    return search_pb2.SearchStatus(
        search_id=status.search_id,
        state=status.state,
        problems_done=status.problems_done,
        problems_total=status.problems_total,
        nodes=status.nodes,
        solved_fraction=status.solved_fraction,
        generator_calls=status.generator_calls,
        elapsed_seconds=status.elapsed_seconds,
        message=status.message,
    )


def status_to_progress(status: JobStatus) -> common_pb2.Progress:
    return common_pb2.Progress(
        id=status.search_id,
        stage="search",
        done=status.problems_done,
        total=status.problems_total,
        state=status.state,
        message=status.message,
        elapsed_seconds=status.elapsed_seconds,
        metrics={
            "nodes": float(status.nodes),
            "solved_fraction": status.solved_fraction,
            "generator_calls": float(status.generator_calls),
        },
    )
