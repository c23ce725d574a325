"""Prefill for Llama-layout models: several prompts in one pass, packed end to end.

The model's own forward prefills a group of prompts as a left-padded batch: every prompt
pays for the longest one's length, transformers builds a padding mask of batch x length x
length, and the pass computes what prefill never uses (the last layer's queries, attention,
output projection and MLP: only its keys and values are kept, since a prompt's last token
is fed by the next decode step). Here the prompts' tokens are laid end to end in one
sequence: the projections and MLPs run once over all tokens with no padding, attention runs
per prompt (causal, no mask; by the C kernel of cpu_kernels.py where it serves, one call
for every prompt of the pass), and the last layer stops after its keys and values.
Same modules, same order as the model's forward (fast_decode.py checks the layout); the
results agree with it up to float rounding (tests/generator/test_engines.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from astro_core.engines.cpu_kernels import CPUKernels, same_layout, source_row
from astro_core.engines.fast_decode import RopeTable, llama_layout, plus_linear, rms_norm, swiglu
from astro_core.engines.kv_slots import apply_rotary

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer ([1, kv_heads, n, head_dim] x 2)

# Tokens in one pass: bounds the activations ([tokens, intermediate] per MLP) of big calls.
PASS_TOKENS = 8192


def packed_prefill(model: Any, kernel: CPUKernels | None = None) -> PackedPrefill | None:
    """The packed prefill for this model, or None when its layout is another."""
    return PackedPrefill(model, kernel) if llama_layout(model) else None


class PackedPrefill:
    def __init__(self, model: Any, kernel: CPUKernels | None = None) -> None:
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        self.kernel = kernel
        self.rope = RopeTable(self.inner.rotary_emb)

    def __call__(
        self,
        prompts: Sequence[Sequence[int]],
        device: str,
        prefixes: Sequence[Prefix | None] | None = None,
    ) -> list[LayerKV]:
        """Each prompt's keys and values per layer ([1, kv_heads, len, head_dim]).

        `prefixes[i]`, when given, holds the keys/values of prompt i's first tokens (from
        the prefix cache) and how many tokens they cover: only the rest is computed, its
        attention reading the prefix's keys/values.
        """
        items = [
            _Item(prompt, prefixes[i] if prefixes else None) for i, prompt in enumerate(prompts)
        ]
        for chunk in _passes(items):
            self._pass(chunk, device)
        return [item.result() for item in items]

    def _pass(self, items: Sequence[_Item], device: str) -> None:
        ids = torch.tensor([t for item in items for t in item.rest], device=device)
        positions = torch.tensor(
            [i for item in items for i in range(item.done, len(item.prompt))], device=device
        )
        bounds, start = [], 0
        for item in items:
            bounds.append((start, start + len(item.rest)))
            start += len(item.rest)
        tokens = len(ids)
        hidden = self.inner.embed_tokens(ids)  # [tokens, hidden]
        rotary = self.rope(hidden, positions)  # cos, sin: [tokens, head_dim]
        kept: LayerKV = []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            attention, mlp = layer.self_attn, layer.mlp
            x = rms_norm(layer.input_layernorm, hidden, self.kernel)
            shape = (1, tokens, -1, attention.head_dim)
            key = self._rotated(attention.k_proj(x).view(shape), rotary)
            value = attention.v_proj(x).view(shape).transpose(1, 2)
            kept.append((key, value))
            if index == last:  # nothing after the last layer's keys/values is used
                break
            query = attention.q_proj(x).view(shape)  # rotated in _attention
            out = self._attention(items, bounds, index, query, key, value, rotary)
            hidden = plus_linear(hidden, attention.o_proj, out.reshape(tokens, -1))
            x = rms_norm(layer.post_attention_layernorm, hidden, self.kernel)
            gated = swiglu(mlp.act_fn, mlp.gate_proj(x), mlp.up_proj(x), self.kernel)
            hidden = plus_linear(hidden, mlp.down_proj, gated)
        for item, (begin, end) in zip(items, bounds, strict=True):
            item.computed = [(k[:, :, begin:end], v[:, :, begin:end]) for k, v in kept]

    def _rotated(
        self, keys: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Keys ([1, tokens, kv_heads, head_dim]) rotated by their positions' rotary
        embedding: [1, kv_heads, tokens, head_dim] (the C kernel's in one call)."""
        if self.kernel is None:
            return apply_rotary(keys.transpose(1, 2), *rotary)  # cos/sin broadcast over heads
        return self.kernel.rotary(keys[0], *rotary)[None].transpose(1, 2)

    def _attention(
        self,
        items: Sequence[_Item],
        bounds: list[tuple[int, int]],
        layer: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Causal attention of each prompt of the pass: [tokens, heads, head_dim], for
        queries ([1, tokens, heads, head_dim]) not rotated yet. Token t of a prompt whose
        first `done` tokens are cached attends to its prompt's columns 0 .. done + t: by the
        C kernel, every prompt in one call, where it serves; else by SDPA, prompt by
        prompt."""
        scale = self.layers[layer].self_attn.scaling
        if self.kernel is None or not self.kernel.usable():
            query = apply_rotary(query.transpose(1, 2), *rotary)  # [1, heads, tokens, dim]
            out = torch.empty_like(query)  # [1, heads, tokens, head_dim]
            for item, (begin, end) in zip(items, bounds, strict=True):
                keys, values, mask = item.context(
                    layer, key[:, :, begin:end], value[:, :, begin:end]
                )
                out[:, :, begin:end] = F.scaled_dot_product_attention(
                    query[:, :, begin:end],
                    keys,
                    values,
                    attn_mask=mask,
                    is_causal=mask is None,
                    scale=scale,
                    enable_gqa=True,
                )
            return out[0].transpose(0, 1)
        sources, rows, alive = [], [], []
        for s, (item, (begin, end)) in enumerate(zip(items, bounds, strict=True)):
            keys, values = same_layout(*item.keys_values(layer, key, value, begin, end))
            alive.append((keys, values))  # the table holds their addresses
            sources.append(source_row(keys, values))
            columns = torch.arange(item.done + 1, item.done + end - begin + 1, dtype=torch.int32)
            fixed = torch.tensor([s, 0, 0], dtype=torch.int32).expand(len(columns), 3)
            rows.append(torch.cat([fixed, columns[:, None]], dim=1))
        return self.kernel(
            query[0],
            torch.cat(rows),
            torch.tensor(sources, dtype=torch.int64),
            key.shape[1],
            float(scale),
            max(len(item.prompt) for item in items),
            rotary=rotary,
        )


Prefix = tuple[LayerKV, int]  # keys/values of a prompt's first tokens, and how many


class _Item:
    """One prompt of a packed prefill: the tokens to compute after its cached prefix."""

    def __init__(self, prompt: Sequence[int], prefix: Prefix | None) -> None:
        self.prompt = prompt
        self.prefix: LayerKV | None = prefix[0] if prefix is not None else None
        self.done = prefix[1] if prefix is not None else 0
        self.rest = prompt[self.done :]
        self.computed: LayerKV = []

    def keys_values(
        self, layer: int, key: torch.Tensor, value: torch.Tensor, begin: int, end: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This prompt's keys and values at a layer, its cached prefix's first: the pass's
        columns begin..end are its new tokens'."""
        key, value = key[:, :, begin:end], value[:, :, begin:end]
        if self.prefix is None:
            return key, value
        old_keys, old_values = self.prefix[layer]
        return torch.cat([old_keys, key], dim=2), torch.cat([old_values, value], dim=2)

    def context(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What this prompt's new tokens attend to at a layer: the prefix and themselves,
        causally (a mask when there is a prefix: sdpa's causal flag aligns to the top left)."""
        keys, values = self.keys_values(layer, key, value, 0, key.shape[2])
        if self.prefix is None:
            return keys, values, None
        new = key.shape[2]
        mask = torch.ones(new, self.done + new, dtype=torch.bool, device=key.device)
        return keys, values, mask.tril(diagonal=self.done)

    def result(self) -> LayerKV:
        if self.prefix is None:
            return self.computed
        if not self.rest:  # the prompt is its cached prefix
            return self.prefix
        return [
            (torch.cat([k0, k], dim=2), torch.cat([v0, v], dim=2))
            for (k0, v0), (k, v) in zip(self.prefix, self.computed, strict=True)
        ]


def _passes(items: Sequence[_Item]) -> Iterator[Sequence[_Item]]:
    """Consecutive runs of prompts with at most PASS_TOKENS tokens to compute (a longer
    prompt alone); prompts that are all cached need no pass."""
    run: list[_Item] = []
    tokens = 0
    for item in items:
        if not item.rest:
            continue
        if run and tokens + len(item.rest) > PASS_TOKENS:
            yield run
            run, tokens = [], 0
        run.append(item)
        tokens += len(item.rest)
    if run:
        yield run
