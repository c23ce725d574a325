"""The hf engine's prefix cache: lookups by shared block-aligned prefix, LRU within a token
budget, and generation that does not change when prompts are prefilled from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from astro_core.engines import EngineConfig, GenerationRequest, SamplingParams
from astro_core.engines.hf import MIN_REUSE, HFEngine
from astro_core.engines.prefix_cache import BLOCK, PrefixCache
from tests.generator.test_engines import assert_same


def kv_of(tokens: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fake one-layer keys/values whose column j holds token j (so slices can be checked)."""
    column = torch.tensor(tokens, dtype=torch.float32)[None, None, :, None]
    return [(column.clone(), -column.clone())]


def test_lookup_finds_the_longest_block_aligned_shared_prefix() -> None:
    cache = PrefixCache(budget_tokens=10_000)
    stored = tuple(range(100))
    cache.store(stored, kv_of(stored))
    assert cache.lookup(tuple(range(BLOCK - 1))) is None  # shorter than a block
    query = (*range(40), 999, *range(41, 60))  # diverges at token 40
    hit = cache.lookup(query)
    assert hit is not None
    kv, length = hit
    assert length == 2 * BLOCK  # 32: the last whole block before the divergence
    assert kv[0][0][0, 0, :, 0].tolist() == list(range(length))
    assert kv[0][1][0, 0, :, 0].tolist() == [-float(t) for t in range(length)]
    whole = cache.lookup(stored + (7, 7))
    assert whole is not None and whole[1] == (100 // BLOCK) * BLOCK
    assert cache.lookup((5, *range(1, 40))) is None  # differs in the first block
    assert cache.stats.hits == 2 and cache.stats.lookups == 4


def test_least_recently_used_entries_leave_within_the_budget() -> None:
    cache = PrefixCache(budget_tokens=3 * 64)
    prompts = [tuple(range(k * 1000, k * 1000 + 64)) for k in range(4)]
    for prompt in prompts[:3]:
        cache.store(prompt, kv_of(prompt))
    assert cache.lookup(prompts[0]) is not None  # now the most recently used
    cache.store(prompts[3], kv_of(prompts[3]))  # over budget: the oldest (prompts[1]) leaves
    assert len(cache) == 3
    assert cache.lookup(prompts[1]) is None
    assert all(cache.lookup(p) is not None for p in (prompts[0], prompts[2], prompts[3]))
    cache.store(tuple(range(10_000)), kv_of(tuple(range(10_000))))  # larger than the budget
    assert len(cache) == 3


@pytest.fixture(scope="module", params=["packed", "padded"])
def engines(request: pytest.FixtureRequest, tiny_model_dir: Path) -> tuple[HFEngine, HFEngine]:
    """With and without the prefix cache; prefilling packed (fast_prefill.py: a cached
    prefix's keys/values are read by the rest's attention) or through the model's forward."""
    packed = request.param == "packed"
    path = str(tiny_model_dir)
    with_cache = HFEngine(EngineConfig(model_path=path, fast_prefill=packed))
    without = HFEngine(
        EngineConfig(model_path=path, fast_prefill=packed, enable_prefix_caching=False)
    )
    assert (with_cache._packed is not None) == packed
    assert with_cache.prefix_cache is not None and without.prefix_cache is None
    return with_cache, without


def test_search_like_prompts_reuse_prefixes_and_generate_the_same(
    engines: tuple[HFEngine, HFEngine],
) -> None:
    """A node's prompt, then its children's prompts (the node's plus a step): the children
    prefill only their steps, together, and every completion is what it is uncached."""
    with_cache, without = engines
    node = "Solve for x: 2x + 3 = 7. Let's think step by step. " * 6
    steps = ["First, subtract 3.", "Divide both sides by 2 now.", "x = 2", ""]
    calls = [
        GenerationRequest((node,), SamplingParams(n=3, max_tokens=8, seed=1, logprobs=True)),
        GenerationRequest(
            tuple(node + s for s in steps), SamplingParams(n=2, max_tokens=12, seed=2)
        ),
        GenerationRequest(  # deeper: extends a child's prompt; and a repeat of the node
            (node + steps[0] + " Then 2x = 4.", node),
            SamplingParams(max_tokens=10, temperature=0, logprobs=True),
        ),
    ]
    assert with_cache.prefix_cache is not None
    for call in calls:
        before = with_cache.prefix_cache.stats.reused_tokens
        [cached] = with_cache.generate_batch([call])
        [uncached] = without.generate_batch([call])
        assert_same(cached, uncached)
        if call is not calls[0]:
            assert with_cache.prefix_cache.stats.reused_tokens - before >= MIN_REUSE
    assert with_cache.prefix_cache.stats.hits >= 6


def test_entries_hold_only_their_own_prompts_keys_and_values(
    engines: tuple[HFEngine, HFEngine],
) -> None:
    """Prompts prefilled together in one packed pass are stored as copies of their own
    columns; a prompt prefilled alone is stored as it is (no copy): either way an entry
    holds no memory beyond its prompt's keys/values, so the budget is what it uses."""
    with_cache, _ = engines
    assert with_cache.prefix_cache is not None
    together = tuple(f"Problem {i}: how many primes lie below {10 * i}? " * 3 for i in range(3))
    alone = "A prompt prefilled on its own, long enough to be kept by the cache. " * 2
    with_cache.generate_batch([GenerationRequest(together, SamplingParams(max_tokens=2))])
    with_cache.generate_batch([GenerationRequest((alone,), SamplingParams(max_tokens=2))])
    entries = list(with_cache.prefix_cache._entries.values())
    assert len(entries) >= 4
    for entry in entries:
        for tensor in (t for layer in entry.kv for t in layer):
            assert tensor.shape[2] == len(entry.tokens)
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_rows_of_very_different_lengths_get_their_own_attention_window() -> None:
    """A new row joins the group where it adds the least attention work (members x the
    longest member): long prompts do not make every short row attend over their length,
    and rows of similar length share a window."""
    from astro_core.engines.kv_slots import GROUPS, pick_group

    groups: list[list[int]] = [[] for _ in GROUPS]
    for length in [100, 600, 300, 20, 90, 580, 120, 95, 280, 630, 110, 25, 105, 310]:
        groups[pick_group(groups, length)].append(length)
    assert sorted(map(sorted, groups)) == [
        [20, 25],
        [90, 95, 100, 105, 110, 120],
        [280, 300, 310],
        [580, 600, 630],
    ]
    work = sum(len(g) * max(g) for g in groups)
    assert work == 2 * 25 + 6 * 120 + 3 * 310 + 3 * 630  # vs 14 * 630 with one window
