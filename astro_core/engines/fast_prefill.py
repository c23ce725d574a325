"""Prefill for Llama-layout models: several prompts in one pass, packed end to end.

The model's own forward prefills a group of prompts as a left-padded batch: every prompt
pays for the longest one's length, transformers builds a padding mask of batch x length x
length, and the pass computes what prefill never uses (the last layer's queries, attention,
output projection and MLP: only its keys and values are kept, since a prompt's last token
is fed by the next decode step). Here the prompts' tokens are laid end to end in one
sequence: the projections and MLPs run once over all tokens with no padding, attention runs
per prompt (causal, no mask), and the last layer stops after its keys and values.
Same modules, same order as the model's forward (fast_decode.py checks the layout); the
results agree with it up to float rounding (tests/generator/test_engines.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from astro_core.engines.fast_decode import llama_layout, rotate_half

LayerKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer ([1, kv_heads, n, head_dim] x 2)

# Tokens in one pass: bounds the activations ([tokens, intermediate] per MLP) of big calls.
PASS_TOKENS = 8192


def packed_prefill(model: Any) -> PackedPrefill | None:
    """The packed prefill for this model, or None when its layout is another."""
    return PackedPrefill(model) if llama_layout(model) else None


class PackedPrefill:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)

    def __call__(self, prompts: Sequence[Sequence[int]], device: str) -> list[LayerKV]:
        """Each prompt's keys and values per layer ([1, kv_heads, len, head_dim] views)."""
        results: list[LayerKV] = []
        for chunk in _passes(prompts):
            results.extend(self._pass(chunk, device))
        return results

    def _pass(self, prompts: Sequence[Sequence[int]], device: str) -> list[LayerKV]:
        ids = torch.tensor([t for p in prompts for t in p], device=device)
        positions = torch.tensor([i for p in prompts for i in range(len(p))], device=device)
        bounds, start = [], 0
        for prompt in prompts:
            bounds.append((start, start + len(prompt)))
            start += len(prompt)
        tokens = len(ids)
        hidden = self.inner.embed_tokens(ids[None])  # [1, tokens, hidden]
        cos, sin = self.inner.rotary_emb(hidden, positions[None])
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        kept: LayerKV = []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (1, tokens, -1, attention.head_dim)
            key = attention.k_proj(x).view(shape).transpose(1, 2)
            key = (key * cos) + (rotate_half(key) * sin)
            value = attention.v_proj(x).view(shape).transpose(1, 2)
            kept.append((key, value))
            if index == last:  # nothing after the last layer's keys/values is used
                break
            query = attention.q_proj(x).view(shape).transpose(1, 2)
            query = (query * cos) + (rotate_half(query) * sin)
            out = torch.empty_like(query)  # [1, heads, tokens, head_dim]
            for begin, end in bounds:
                out[:, :, begin:end] = F.scaled_dot_product_attention(
                    query[:, :, begin:end],
                    key[:, :, begin:end],
                    value[:, :, begin:end],
                    is_causal=True,
                    scale=attention.scaling,
                    enable_gqa=True,
                )
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(1, tokens, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return [[(k[:, :, b:e], v[:, :, b:e]) for k, v in kept] for b, e in bounds]


def _passes(prompts: Sequence[Sequence[int]]) -> Iterator[Sequence[Sequence[int]]]:
    """Consecutive runs of prompts of at most PASS_TOKENS tokens (a longer prompt alone)."""
    begin, tokens = 0, 0
    for i, prompt in enumerate(prompts):
        if tokens and tokens + len(prompt) > PASS_TOKENS:
            yield prompts[begin:i]
            begin, tokens = i, 0
        tokens += len(prompt)
    if begin < len(prompts):
        yield prompts[begin:]
