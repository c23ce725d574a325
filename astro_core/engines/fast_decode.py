"""A decode step for Llama-layout models that skips transformers' per-call machinery.

On CPU a small model's decode step is mostly Python: the model's forward wraps every call in
decorators, output dataclasses, mask construction, kwargs deprecation shims and the
attention-function dispatch, which cost as much as the arithmetic of 32 rows. This step
calls the same modules (embedding, rotary embedding, norms, projections, MLP) in the same
order on the slot cache, and nothing else. It applies only to the layout it is written
for: pre-norm decoder layers made of exactly self_attn (q/k/v/o projections) + mlp
(gate/up/down projections and an activation) + input/post-attention norms (Llama, Mistral,
Qwen2); other models take the model's forward.
`tests/generator/test_engines.py` checks both give the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from astro_core.engines.cpu_kernels import CPUKernels
from astro_core.engines.kv_slots import SlotCache

MODEL_TYPES = {"llama", "mistral", "qwen2"}
_LAYER_PARTS = {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"}
_ATTENTION_PARTS = {"q_proj", "k_proj", "v_proj", "o_proj"}
_MLP_PARTS = {"gate_proj", "up_proj", "down_proj", "act_fn"}


def llama_layout(model: Any) -> bool:
    """Whether the model is made of the modules the lean steps call (and nothing else)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if getattr(model.config, "model_type", None) not in MODEL_TYPES or layers is None:
        return False
    if getattr(model.config, "pretraining_tp", 1) != 1:
        return False
    for layer in layers:
        attention = getattr(layer, "self_attn", None)
        if set(dict(layer.named_children())) != _LAYER_PARTS or attention is None:
            return False
        if set(dict(attention.named_children())) != _ATTENTION_PARTS:
            return False
        if set(dict(layer.mlp.named_children())) != _MLP_PARTS:
            return False
    return all(hasattr(inner, part) for part in ("embed_tokens", "rotary_emb", "norm"))


def fast_decoder(model: Any, kernel: CPUKernels | None = None) -> FastDecoder | None:
    """The lean decode step for this model, or None when its layout is another. With the C
    kernels (cpu_kernels.py) its norms, rotary embedding and MLP activation are one call
    each."""
    return FastDecoder(model, kernel) if llama_layout(model) else None


class FastDecoder:
    """One decode step over the slot cache, in as few tensor operations as the layout allows.

    Per layer: one projection for queries, keys and values together, one rotary embedding of
    queries and keys together, fused RMS norms, one projection for the MLP's gate and up
    halves. The fused projections' weights are single tensors that the model's own
    q/k/v and gate/up weights become views of (no second copy; weights copied in place, as
    a colocated trainer does, reach both).
    """

    def __init__(self, model: Any, kernel: CPUKernels | None = None) -> None:
        self.model = model
        self.inner = model.model
        self.layers = [_LeanLayer(layer) for layer in self.inner.layers]
        self.rope = RopeTable(self.inner.rotary_emb)
        self.kernel = kernel

    def __call__(
        self, cache: SlotCache, inputs: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits [rows, vocab] after feeding each live row one token."""
        rows = inputs.shape[0]
        hidden = self.inner.embed_tokens(inputs)  # [rows, hidden]
        rotary = self.rope(hidden, positions)  # cos, sin: [rows, head_dim]
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(self._norm(layer.input_norm, hidden)).view(rows, -1, layer.head_dim)
            heads, kv_heads = layer.heads, layer.kv_heads
            out = cache.write_and_attend(
                qkv[:, :heads, None],  # [rows, heads, 1, head_dim]
                qkv[:, heads : heads + kv_heads, None],
                qkv[:, heads + kv_heads :, None],
                index,
                layer.scaling,
                rotary,
            )
            hidden = plus_linear(hidden, layer.o_proj, out.reshape(rows, -1))
            gate, up = layer.gate_up(self._norm(layer.post_norm, hidden)).chunk(2, dim=-1)
            hidden = plus_linear(hidden, layer.down_proj, swiglu(layer.act, gate, up, self.kernel))
        logits: torch.Tensor = self.model.lm_head(self._norm(self.inner.norm, hidden))
        return logits

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(norm, x, self.kernel)


class _LeanLayer:
    """A decoder layer's modules, with q/k/v and gate/up projections fused."""

    def __init__(self, layer: Any) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        self.head_dim = int(attention.head_dim)
        self.heads = attention.q_proj.out_features // self.head_dim
        self.kv_heads = attention.k_proj.out_features // self.head_dim
        self.scaling = attention.scaling
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.o_proj, self.down_proj, self.act = attention.o_proj, mlp.down_proj, mlp.act_fn
        self.qkv = _fused([attention.q_proj, attention.k_proj, attention.v_proj])
        self.gate_up = _fused([mlp.gate_proj, mlp.up_proj])


class _Fused:
    """Several linear projections of the same input as one (outputs concatenated)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _fused(linears: list[Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One projection computing every linear's output (concatenated); the linears' weights
    become views of its weight. Unusual linears (another class, some with a bias and some
    without) are called one by one instead."""
    plain = all(type(linear) is torch.nn.Linear for linear in linears)
    with_bias = [linear.bias is not None for linear in linears]
    if not plain or len(set(with_bias)) != 1:
        return lambda x: torch.cat([linear(x) for linear in linears], dim=-1)
    sizes = [linear.out_features for linear in linears]
    with torch.no_grad():
        weight = torch.cat([linear.weight.detach() for linear in linears])
        for linear, part in zip(linears, torch.split(weight, sizes), strict=True):
            linear.weight.data = part
        bias = None
        if with_bias[0]:
            bias = torch.cat([linear.bias.detach() for linear in linears])
            for linear, part in zip(linears, torch.split(bias, sizes), strict=True):
                linear.bias.data = part
    return _Fused(weight, bias)


def rms_norm(norm: Any, x: torch.Tensor, kernel: CPUKernels | None = None) -> torch.Tensor:
    """A Llama RMS norm module's output in one call: the C kernel's where given, else
    torch's fused `rms_norm` (the same values as the module, which upcasts, squares,
    averages, scales and multiplies step by step, up to rounding); other norms as they are."""
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None or x.dtype != torch.float32 or not type(norm).__name__.endswith("RMSNorm"):
        return norm(x)  # type: ignore[no-any-return]
    if kernel is not None and norm.weight.dtype == torch.float32:
        return kernel.rms_norm(x, norm.weight, eps)
    return F.rms_norm(x, norm.weight.shape, norm.weight, eps)


def swiglu(
    act: Any, gate: torch.Tensor, up: torch.Tensor, kernel: CPUKernels | None
) -> torch.Tensor:
    """act(gate) * up, Llama's gated MLP activation: one C call for SiLU where the kernels
    serve, else as the modules compute it."""
    if kernel is not None and type(act).__name__ in _SILU and gate.dtype == torch.float32:
        return kernel.silu_mul(gate, up)
    return act(gate) * up  # type: ignore[no-any-return]


_SILU = {"SiLU", "SiLUActivation"}


def plus_linear(hidden: torch.Tensor, linear: Any, x: torch.Tensor) -> torch.Tensor:
    """hidden + linear(x) (rows of 2-D tensors): one operation for a plain linear without
    bias (the residual added by the matrix product), two otherwise."""
    if type(linear) is torch.nn.Linear and linear.bias is None and hidden.dim() == 2:
        return torch.addmm(hidden, x, linear.weight.t())
    return hidden + linear(x)  # type: ignore[no-any-return]


class RopeTable:
    """cos/sin ([rows, head_dim]) of the rotary embedding per position, computed once by
    the model's own rotary module and looked up by position (a step would otherwise
    recompute them); rotary types that depend on the sequence length are computed every
    step."""

    def __init__(self, rotary: Any) -> None:
        self.rotary = rotary
        self.static = getattr(rotary, "rope_type", "default") in _STATIC_ROPE
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def __call__(
        self, hidden: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.static:
            cos, sin = self.rotary(hidden, positions[:, None])  # [rows, 1, head_dim]
            return cos[:, 0], sin[:, 0]
        needed = int(positions.max()) + 1
        if self.cos is None or self.cos.shape[0] < needed or self.cos.dtype != hidden.dtype:
            size = max(needed, 2 * (self.cos.shape[0] if self.cos is not None else 256))
            every = torch.arange(size, device=hidden.device)[None]
            cos, sin = self.rotary(hidden, every)
            self.cos, self.sin = cos[0], sin[0]  # [positions, head_dim]
        assert self.sin is not None
        return self.cos[positions], self.sin[positions]


_STATIC_ROPE = {"default", "linear", "llama3"}
