"""Configuration of a generation engine (one pydantic model for both engines)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

EngineKind = Literal["hf", "vllm"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(BaseModel):
    """Which engine serves which model directory, where and how.

    The CPU preset is the default (hf, fp32); on a GPU pod use `kind: vllm` (or hf, which
    then runs in bf16).
    """

    kind: EngineKind = Field(
        "hf", description="hf: transformers, CPU or CUDA; vllm: vLLM in process (CUDA)."
    )
    model_path: str = Field("", description="Hugging Face model directory to load.")
    model_name: str = Field("", description="Name reported by GetModel; default: the dir name.")
    model_version: str = Field(
        "",
        description="Version every completion carries; default: <dir name>#<content digest> "
        "(registry checkpoints use name:version).",
    )
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda:0.")
    dtype: DType = Field("auto", description="auto: bfloat16 on GPU, float32 on CPU.")
    max_model_len: int | None = Field(
        None, gt=1, description="Prompt + completion token limit; default: the model's own."
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="hf on CPU: torch intra-op threads for the process; default: torch's. "
        "1 is fastest for small models on a busy machine.",
    )
    fast_decode: bool = Field(
        True,
        description="hf: decode Llama-layout models (llama, mistral, qwen2) with a lean step "
        "that calls their modules without transformers' per-call machinery (q/k/v and "
        "gate/up projections fused; the model's weights become views of the fused ones); "
        "off: the model's own forward (used anyway for other models).",
    )
    fast_prefill: bool = Field(
        True,
        description="hf: prefill the prompts of Llama-layout models packed end to end in one "
        "pass (no padding; the last layer stops at its keys/values); off: the model's own "
        "forward over left-padded groups (used anyway for other models).",
    )
    fast_attention: bool = Field(
        True,
        description="hf on CPU (float32): attention (and RMS norms) of decode steps and "
        "packed prefill by small C kernels; attention reads each row's own columns "
        "(cpu_kernels.c, built at first use by the machine's C compiler; 2-5x faster than "
        "SDPA); off, or without a compiler: torch's SDPA and norms. Same results up to "
        "float rounding.",
    )
    max_num_seqs: int = Field(
        256, ge=1, description="Most sequences decoded together in one engine batch."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs the model is split over.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vllm: fraction of GPU memory for weights and KV cache."
    )
    enable_prefix_caching: bool = Field(
        True,
        description="Reuse the KV cache of prompt prefixes shared across calls (search "
        "rollouts extend their node's prompt); vllm, and hf within prefix_cache_mb.",
    )
    prefix_cache_mb: float = Field(
        256,
        ge=0,
        description="hf: memory for the keys/values of recently prefilled prompts (least "
        "recently used evicted first); 0 turns the hf prefix cache off.",
    )
