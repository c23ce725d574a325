"""The model a job trains: where it comes from, loading it, LoRA, and its merged weights.

`model` in a config is a Hugging Face directory or a registered checkpoint (`NAME:VERSION`,
`NAME@ALIAS`, or a bare `NAME` for its latest version), pulled through the CheckpointStore
seam. With `lora` set, peft adapters are trained on a frozen base; checkpoints and policy
sync use the merged full weights (`merged_state_dict`), so every consumer sees a plain model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from astro_core.checkpoints import CheckpointStore, parse_ref
from astro_core.engines.sources import ModelNotFound, ModelSource, resolve_model
from astro_core.models.accelerator import select_deepspeed_accelerator
from astro_core.paths import data_dir
from astro_core.training.config import LoraSettings, TrainerConfig
from astro_core.training.engine import (
    DistributedEnv,
    barrier,
    deepspeed_config,
    import_deepspeed,
    uses_bf16,
)

select_deepspeed_accelerator()  # save_pretrained imports deepspeed through accelerate


class ModelLoadError(ValueError):
    """The starting model cannot be found or is not a causal language model."""


@dataclass(frozen=True)
class StartingModel:
    """The model a job starts from, resolved to a local directory."""

    path: Path
    ref: str  # "name:version" of a registered checkpoint; "" for a plain directory
    name: str = ""
    version: int = 0


def is_registry_ref(model: str) -> bool:
    """A reference like `tiny:3`, `tiny@sft` or `tiny` (not an existing path)."""
    if "/" in model or "\\" in model or model.startswith(("~", ".")):
        return False
    if Path(model).exists():
        return False
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*([:@][A-Za-z0-9._-]+)?", model) is not None


def resolve_starting_model(
    model: str, store: CheckpointStore | None, cache_dir: str | Path
) -> StartingModel:
    """A local directory for `model`, pulling a registered checkpoint into cache_dir."""
    if not is_registry_ref(model):
        try:
            resolved = resolve_model(ModelSource(path=model), None, cache_dir)
        except ModelNotFound as exc:
            raise ModelLoadError(str(exc)) from exc
        except ValueError as exc:
            raise ModelLoadError(f"model {model} is not a causal language model: {exc}") from exc
        check_causal_lm(resolved.path)
        return StartingModel(resolved.path, "")
    name, version, alias = parse_ref(model)
    if store is None:
        raise ModelLoadError(
            f"model {model!r} is a registry reference, but no registry_address is set "
            "(or give a model directory)"
        )
    try:
        source = ModelSource(name=name, version=version, alias=alias)
        resolved = resolve_model(source, store, cache_dir)
    except ModelNotFound as exc:
        raise ModelLoadError(str(exc)) from exc
    check_causal_lm(resolved.path)
    return StartingModel(resolved.path, resolved.version, name, int(resolved.version.split(":")[1]))


def prepare_model(
    config: TrainerConfig,
    store: CheckpointStore | None,
    env: DistributedEnv,
    model: str | None = None,
) -> tuple[StartingModel, torch.nn.Module, PreTrainedTokenizerBase]:
    """Resolve (pulling a registered checkpoint once per machine: local rank 0 first) and
    load `model` (default: config.model) for training with the config's dtype, attention,
    gradient checkpointing and LoRA. Seeds torch first, so LoRA initialises the same on
    every rank and every run."""
    reference = model or config.model
    cache = data_dir() / "checkpoint-cache"
    if env.local_rank == 0:
        starting = resolve_starting_model(reference, store, cache)
    barrier()
    if env.local_rank != 0:
        starting = resolve_starting_model(reference, store, cache)
    torch.manual_seed(config.seed)
    bf16 = uses_bf16(config)
    with partitioned_loading(config, env, bf16):
        loaded, tokenizer = load_for_training(
            starting.path,
            dtype=torch.bfloat16 if bf16 else torch.float32,
            attn_implementation=config.attn_implementation,
            gradient_checkpointing=config.gradient_checkpointing,
            lora=config.lora,
        )
    return starting, loaded, tokenizer


@contextmanager
def partitioned_loading(config: TrainerConfig, env: DistributedEnv, bf16: bool) -> Iterator[None]:
    """Under ZeRO-3, transformers loads the weights straight into their partitions (each rank
    holds 1/world of them, never the whole model); elsewhere a no-op. The switch is global in
    transformers, so it is on only while loading."""
    if config.deepspeed.zero_stage != 3:
        yield
        return
    import_deepspeed()
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    switch = HfDeepSpeedConfig(deepspeed_config(config, env.world_size, bf16))  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        unset_hf_deepspeed_config()  # type: ignore[no-untyped-call]
        del switch


def check_causal_lm(path: Path) -> None:
    """Raise ModelLoadError unless `path` holds a config of a causal-LM architecture."""
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"model {path} is not a causal language model: {first}") from exc
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        kind = ", ".join(config.architectures or []) or config.model_type
        raise ModelLoadError(
            f"model {path} is not a causal language model (it is a {kind}); "
            "SFT and GRPO need an *ForCausalLM model"
        )


def load_for_training(
    path: Path,
    *,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    lora: LoraSettings | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The model in train mode (LoRA-wrapped when asked) and its tokenizer."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot load model {path}: {first}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False  # training never decodes; the cache only costs memory
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        model = apply_lora(model, lora)
        if gradient_checkpointing:
            model.enable_input_require_grads()
    model.train()
    return model, tokenizer


def apply_lora(model: PreTrainedModel, lora: LoraSettings) -> torch.nn.Module:
    """Wrap model with LoRA adapters on `lora.target_modules` (the base is frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        wrapped: torch.nn.Module = get_peft_model(model, config)
    except ValueError as exc:
        raise ModelLoadError(f"lora: {str(exc).splitlines()[0]}") from exc
    return wrapped


def base_model(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    inner = get_base() if callable(get_base) else model
    assert isinstance(inner, PreTrainedModel)
    return inner


_PEFT_PREFIX = "base_model.model."


def merged_state_dict(
    state: dict[str, torch.Tensor], lora: LoraSettings | None
) -> dict[str, torch.Tensor]:
    """A full state dict of the plain model: for a LoRA model, each adapted weight becomes
    W + (B @ A) * alpha / r and the adapter tensors are dropped; computed out of place, so
    training continues on the unmerged weights exactly."""
    if lora is None:
        return state
    scaling = lora.alpha / lora.r
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        plain = key.removeprefix(_PEFT_PREFIX)
        if ".base_layer." not in plain:
            merged[plain] = value
            continue
        module, _, leaf = plain.rpartition(".base_layer.")
        if leaf == "weight":
            lora_a = _adapter(state, key, "lora_A")
            lora_b = _adapter(state, key, "lora_B")
            delta = (lora_b.float() @ lora_a.float()) * scaling
            value = (value.float() + delta).to(value.dtype)
        merged[f"{module}.{leaf}"] = value
    return merged


def _adapter(state: dict[str, torch.Tensor], base_key: str, which: str) -> torch.Tensor:
    prefix = base_key.rpartition(".base_layer.")[0]
    key = f"{prefix}.{which}.default.weight"
    if key not in state:
        raise KeyError(f"LoRA weight {key} missing from the state dict")
    return state[key]
