"""Procedure cloning: search trees become long chains of thought that reflect and backtrack.

Pipeline: `linearize` (Algorithm 1: node sequences through wrong terminals to a correct one)
-> `verbalize` (natural language, phrases from `phrases`) -> `dataset` (JSONL + summary).
`direct` builds the Direct-CoT control, `parse` reads traces back, `graphs` draws them.
"""

from astro_core.cloning.config import CloningConfig, Style
from astro_core.cloning.dataset import CloneResult, TraceRecord, clone_tree, clone_trees
from astro_core.cloning.linearize import Linearization, sample_linearizations
from astro_core.cloning.parse import count_backtracks, node_path_from_trace, split_trace
from astro_core.cloning.phrases import Phrases
from astro_core.cloning.verbalize import verbalize

__all__ = [
    "CloneResult",
    "CloningConfig",
    "Linearization",
    "Phrases",
    "Style",
    "TraceRecord",
    "clone_tree",
    "clone_trees",
    "count_backtracks",
    "node_path_from_trace",
    "sample_linearizations",
    "split_trace",
    "verbalize",
]
