"""The paper's Algorithm 1: a search tree becomes node sequences that try, fail, go back.

A sequence visits k wrong terminals with pairwise distinct answers and then a correct one.
Their root paths are merged in order: after a wrong terminal the sequence moves back to the
divergence point of the next path (the deepest node both share, possibly the root) and walks
down from there. Such a move to an ancestor is a backtrack, so a sequence that visits k
wrong terminals has exactly k backtracks.

`node_path` lists node ids in visit order; the target of a backtrack appears again where the
move lands: ["0", "0.1", "0.1.0", "0", "0.2", "0.2.1"] tries 0.1.0, restarts, ends at 0.2.1.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from astro_core.cloning.config import CloningConfig
from astro_core.trees import SearchTree, TreeNode


@dataclass(frozen=True)
class Linearization:
    """One node sequence through a tree, ending at a correct terminal."""

    problem_id: str
    node_path: tuple[str, ...]
    correct_terminal: str
    wrong_terminals: tuple[str, ...]

    @property
    def k(self) -> int:
        return len(self.wrong_terminals)


def normalize_answer(answer: str | None) -> str:
    """A comparison key for final answers: spacing, $, \\left/\\right and case do not count."""
    text = (answer or "").strip().strip("$").strip()
    text = re.sub(r"\\(?:left|right|!|,|;|:|displaystyle)", "", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\s+", "", text).rstrip(".")
    return text.lower()


@functools.lru_cache(maxsize=4096)  # a tree's answers are compared pairwise, again and again
def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two final answers are the same: equal strings or numbers, else mathematically
    equal. The sympy comparison runs in a worker process with a time limit (a hostile answer
    such as `(10^{8})!` would otherwise hang cloning); past it, the answers count as distinct."""
    if normalize_answer(a) == normalize_answer(b):
        return True
    if not (a and a.strip() and b and b.strip()):
        return False
    # sympy and the worker pool: imported only when needed
    from astro_core.answers import shared_pool
    from astro_core.answers.fast import quick_verdict
    from astro_core.protocols import VerifyItem

    quick = quick_verdict(a, b)
    if quick is not None:
        return quick
    return shared_pool().check(VerifyItem(response=f"\\boxed{{{b}}}", gold=a)).correct


@dataclass(frozen=True)
class TerminalPools:
    correct: list[TreeNode]
    wrong: list[TreeNode]


def terminal_pools(tree: SearchTree) -> TerminalPools:
    """Verified terminals that end a path (leaves); unverified ones (correct=None) are skipped."""
    children = tree.children()
    leaves = [n for n in tree.terminals() if not children[n.id] and n.parent is not None]
    return TerminalPools(
        correct=[n for n in leaves if n.correct is True],
        wrong=[n for n in leaves if n.correct is False],
    )


def is_ancestor(tree: SearchTree, ancestor: str, node: str) -> bool:
    """Whether `ancestor` lies strictly above `node` on its root path."""
    return ancestor != node and ancestor in {n.id for n in tree.path_to(node)}


def merge_paths(tree: SearchTree, terminals: Sequence[str]) -> tuple[str, ...]:
    """Merge the root paths of `terminals`, in order, into one sequence with backtracks."""
    if not terminals:
        raise ValueError("merge_paths needs at least one terminal")
    sequence = [n.id for n in tree.path_to(terminals[0])]
    current = sequence[:]
    for terminal in terminals[1:]:
        following = [n.id for n in tree.path_to(terminal)]
        shared = 0
        while shared < min(len(current), len(following)) and current[shared] == following[shared]:
            shared += 1
        if shared == len(current):
            raise ValueError(f"terminal {current[-1]} lies on the path to {terminal}")
        sequence.append(following[shared - 1])  # the backtrack: land on the divergence point
        sequence.extend(following[shared:])
        current = following
    return tuple(sequence)


def count_moves_back(tree: SearchTree, node_path: Sequence[str]) -> int:
    """Number of backtracks in a node sequence: moves to an ancestor of the node before."""
    return sum(is_ancestor(tree, b, a) for a, b in zip(node_path, node_path[1:], strict=False))


def sample_wrong_terminals(wrong: Sequence[TreeNode], k: int, rng: random.Random) -> list[TreeNode]:
    """Up to k wrong terminals, in random order, no two with the same answer."""
    chosen: list[TreeNode] = []
    for node in rng.sample(list(wrong), len(wrong)):
        if len(chosen) == k:
            break
        if not any(same_answer(node.answer, other.answer) for other in chosen):
            chosen.append(node)
    return chosen


def distinct_answers(nodes: Sequence[TreeNode]) -> list[TreeNode]:
    """One node per distinct answer (the first of each)."""
    representatives: list[TreeNode] = []
    for node in nodes:
        if not any(same_answer(node.answer, other.answer) for other in representatives):
            representatives.append(node)
    return representatives


def sample_linearizations(
    tree: SearchTree,
    config: CloningConfig,
    correct: Sequence[TreeNode] | None = None,
) -> list[Linearization]:
    """The sequences of one tree: direct ones (k=0) first, then search ones (1 <= k' <= k).

    `correct` overrides the pool of correct terminals (e.g. those that passed the
    self-evaluation vote). No correct terminal, no sequence. Sampling draws from a generator
    seeded by (config.seed, problem_id), so a tree's traces do not depend on its neighbours.
    Duplicate sequences are dropped, so a small tree may yield fewer than asked for.
    """
    pools = terminal_pools(tree)
    correct_pool = list(pools.correct if correct is None else correct)
    if not correct_pool:
        return []
    rng = random.Random(f"{config.seed}:{tree.problem_id}")
    most_wrong = min(config.k, len(distinct_answers(pools.wrong)))
    wanted: list[int] = [0] * config.direct_traces_per_problem
    if most_wrong > 0:
        wanted += [rng.randint(1, most_wrong) for _ in range(config.traces_per_problem)]

    result: list[Linearization] = []
    seen: set[tuple[str, ...]] = set()
    for k in wanted:
        for _attempt in range(8):  # a few redraws to avoid duplicates, then give up on this one
            target = rng.choice(correct_pool)
            wrong = sample_wrong_terminals(pools.wrong, k, rng)
            path = merge_paths(tree, [n.id for n in wrong] + [target.id])
            if path not in seen:
                seen.add(path)
                result.append(
                    Linearization(tree.problem_id, path, target.id, tuple(n.id for n in wrong))
                )
                break
    return result
