"""Keys and values of recently prefilled prompts, so a prompt that shares a long prefix with
one of them prefills only the rest (the hf engine's counterpart of vLLM's prefix caching).

Search is the case it is for: the rollout prompts of a node's children are the node's prompt
plus one step each, and a deeper node's prompt extends its parent's. Because attention is
causal, the first m columns of any stored prompt's keys/values are exactly those of its first
m tokens, so any prefix of a stored prompt can be reused.

Lookups are by blocks of `BLOCK` tokens: each stored prompt registers the chained hash of
every whole block of its tokens, and a prompt's longest shared prefix is found by walking its
own chain of block hashes (O(prompt length)); a hit is confirmed token by token. Entries are
evicted least recently used first, within a budget of cached tokens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

BLOCK = 16

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer ([1, kv_heads, n, head_dim] x 2)


@dataclass(eq=False)
class _Entry:
    tokens: tuple[int, ...]
    kv: LayerKV
    hashes: list[int]


@dataclass
class PrefixStats:
    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0  # prompt tokens not prefilled thanks to the cache


def block_hashes(tokens: tuple[int, ...]) -> list[int]:
    """Chained hash of each whole block: hashes[i] covers tokens[: (i + 1) * BLOCK]."""
    hashes, h = [], 0
    for end in range(BLOCK, len(tokens) + 1, BLOCK):
        h = hash((h, tokens[end - BLOCK : end]))
        hashes.append(h)
    return hashes


class PrefixCache:
    def __init__(self, budget_tokens: int) -> None:
        self.budget_tokens = budget_tokens
        self.stats = PrefixStats()
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._index: dict[int, tuple[_Entry, int]] = {}  # block hash -> (entry, prefix length)
        self._tokens = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: tuple[int, ...]) -> tuple[LayerKV, int] | None:
        """The stored keys/values sharing the longest block-aligned prefix with `tokens`
        (at least one block), and that prefix's length; the views must not be written."""
        with self._lock:
            self.stats.lookups += 1
            found: tuple[_Entry, int] | None = None
            for h in block_hashes(tokens):
                hit = self._index.get(h)
                if hit is None:
                    break
                found = hit
            if found is None:
                return None
            entry, length = found
            if entry.tokens[:length] != tokens[:length]:  # a hash collision
                return None
            self._entries.move_to_end(entry.tokens)
            self.stats.hits += 1
            self.stats.reused_tokens += length
            return [(k[:, :, :length], v[:, :, :length]) for k, v in entry.kv], length

    def store(self, tokens: tuple[int, ...], kv: LayerKV) -> None:
        """Keep a prompt's keys/values (owned by the cache from now on)."""
        if len(tokens) < BLOCK or len(tokens) > self.budget_tokens:
            return
        with self._lock:
            if tokens in self._entries:
                self._entries.move_to_end(tokens)
                return
            entry = _Entry(tokens, kv, block_hashes(tokens))
            self._entries[tokens] = entry
            self._tokens += len(tokens)
            for i, h in enumerate(entry.hashes):
                self._index[h] = (entry, (i + 1) * BLOCK)  # the newest entry wins a block
            while self._tokens > self.budget_tokens:
                self._evict()

    def _evict(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._tokens -= len(entry.tokens)
        for h in entry.hashes:
            if self._index.get(h, (None, 0))[0] is entry:
                del self._index[h]
        # Blocks this entry had taken over from older entries are simply forgotten.
