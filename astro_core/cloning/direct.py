"""The Direct-CoT control: the same trees, straight to a correct answer, same data size.

The paper's control experiment trains on traces that never reflect or backtrack. To isolate
the effect of search-shaped reasoning, each ASTRO sequence gets a direct counterpart: the
root path of the same correct terminal. The control set thus has exactly as many traces per
problem as the ASTRO set and ends at the same solutions.
"""

from __future__ import annotations

from collections.abc import Sequence

from astro_core.cloning.linearize import Linearization
from astro_core.trees import SearchTree


def direct_counterpart(tree: SearchTree, linearization: Linearization) -> Linearization:
    path = tuple(n.id for n in tree.path_to(linearization.correct_terminal))
    return Linearization(linearization.problem_id, path, linearization.correct_terminal, ())


def direct_linearizations(tree: SearchTree, astro: Sequence[Linearization]) -> list[Linearization]:
    """One direct sequence per ASTRO sequence (duplicates kept: the sizes must match)."""
    return [direct_counterpart(tree, lin) for lin in astro]
