"""A decode step for Llama-layout models that skips transformers' per-call machinery.

On CPU a small model's decode step is mostly Python: the model's forward wraps every call in
decorators, output dataclasses, mask construction, kwargs deprecation shims and the
attention-function dispatch, which cost as much as the arithmetic of 32 rows. This step
calls the same modules (embedding, rotary embedding, norms, projections, MLP) in the same
order on the slot cache, and nothing else. It applies only to the layout it is written
for: pre-norm decoder layers made of exactly self_attn (q/k/v/o projections) + mlp +
input/post-attention norms (Llama, Mistral, Qwen2); other models take the model's forward.
`tests/generator/test_engines.py` checks both give the same tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from astro_core.engines.kv_slots import SlotCache

MODEL_TYPES = {"llama", "mistral", "qwen2"}
_LAYER_PARTS = {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"}
_ATTENTION_PARTS = {"q_proj", "k_proj", "v_proj", "o_proj"}


def fast_decoder(model: Any) -> FastDecoder | None:
    """The lean decode step for this model, or None when its layout is another."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if getattr(model.config, "model_type", None) not in MODEL_TYPES or layers is None:
        return None
    if getattr(model.config, "pretraining_tp", 1) != 1:
        return None
    for layer in layers:
        attention = getattr(layer, "self_attn", None)
        if set(dict(layer.named_children())) != _LAYER_PARTS or attention is None:
            return None
        if set(dict(attention.named_children())) != _ATTENTION_PARTS:
            return None
    if not all(hasattr(inner, part) for part in ("embed_tokens", "rotary_emb", "norm")):
        return None
    return FastDecoder(model)


class FastDecoder:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)

    def __call__(
        self, cache: SlotCache, inputs: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits [rows, vocab] after feeding each live row one token."""
        rows = inputs.shape[0]
        hidden = self.inner.embed_tokens(inputs[:, None])  # [rows, 1, hidden]
        cos, sin = self.inner.rotary_emb(hidden, positions[:, None])
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (rows, 1, -1, attention.head_dim)
            query = attention.q_proj(x).view(shape).transpose(1, 2)
            key = attention.k_proj(x).view(shape).transpose(1, 2)
            value = attention.v_proj(x).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            keys, values = cache.write(index, key, value)
            out = cache.attend(query, keys, values, attention.scaling)  # [rows, 1, heads, dim]
            hidden = hidden + attention.o_proj(out.reshape(rows, 1, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits: torch.Tensor = self.model.lm_head(self.inner.norm(hidden)[:, -1, :])
        return logits
