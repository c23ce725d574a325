"""MCTS over reasoning steps (ASTRO's search): config, batched multi-tree driver, tree stores."""

from astro_core.search.config import PRESETS, SearchConfig, load_search_config
from astro_core.search.mcts import MCTS, TreeSearch
from astro_core.search.store import (
    MemoryTreeStore,
    StoredNode,
    TreeConflict,
    TreeHeader,
    TreeStore,
)

__all__ = [
    "MCTS",
    "PRESETS",
    "MemoryTreeStore",
    "SearchConfig",
    "StoredNode",
    "TreeConflict",
    "TreeHeader",
    "TreeSearch",
    "TreeStore",
    "load_search_config",
]
