"""Packing computes what padding does; LoRA merges like peft; a saved checkpoint reloads to
the very logits of the model that was training (ZeRO-0, ZeRO-3, LoRA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from astro_core.models.tiny import load_model
from astro_core.training.checkpointing import MODEL_DIR, TRAINING_INFO, Checkpointer
from astro_core.training.config import DeepSpeedSettings, LoraSettings
from astro_core.training.data import IGNORE_INDEX, TokenizedTrace, collate
from astro_core.training.engine import (
    DistributedEnv,
    TrainEngine,
    init_distributed,
    shutdown_distributed,
)
from astro_core.training.models import StartingModel, load_for_training, merged_state_dict
from tests.training.conftest import sft_config

TRACES = [
    TokenizedTrace([1, 40, 41, 42, 43, 44, 45], [1, 40, 41, 42, 43, 44, 45]),
    TokenizedTrace([1, 50, 51], [IGNORE_INDEX, IGNORE_INDEX, 51]),
    TokenizedTrace([1, 60, 61, 62, 63], [1, 60, 61, 62, 63]),
]


def per_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL of every position (0 where there is no target), aligned with labels[:, 1:]."""
    return F.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )


def sequence_losses(model: torch.nn.Module, traces: list[TokenizedTrace], packing: bool) -> list:
    batch = collate(traces, packing=packing, pad_token_id=2)
    labels = batch.pop("labels")
    with torch.no_grad():
        nll = per_token_nll(model(**batch, use_cache=False).logits, labels)
    if not packing:
        return [nll[row, : len(t.input_ids) - 1] for row, t in enumerate(traces)]
    out, start = [], 0
    for trace in traces:
        out.append(nll[0, start : start + len(trace.input_ids) - 1])
        start += len(trace.input_ids)
    return out


def test_packed_and_padded_batches_give_the_same_per_token_loss(tiny_model_dir: Path) -> None:
    model, _ = load_model(tiny_model_dir)
    packed = sequence_losses(model, TRACES, packing=True)
    padded = sequence_losses(model, TRACES, packing=False)
    alone = [sequence_losses(model, [t], packing=False)[0] for t in TRACES]
    for p, q, r in zip(packed, padded, alone, strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p, r, atol=1e-5, rtol=1e-5)
    assert all(float(p.sum()) > 0 for p in packed)


def test_packed_sequences_do_not_see_each_other(tiny_model_dir: Path) -> None:
    model, _ = load_model(tiny_model_dir)
    changed = [TRACES[0], TokenizedTrace([1, 70, 71, 72, 73], [1, 70, 71, 72, 73]), TRACES[2]]
    before = sequence_losses(model, TRACES, packing=True)
    after = sequence_losses(model, changed, packing=True)
    torch.testing.assert_close(before[0], after[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(before[2], after[2], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(before[1], after[1][:2])


def test_lora_merge_matches_peft(tiny_model_dir: Path) -> None:
    lora = LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model, _ = load_for_training(tiny_model_dir, dtype=torch.float32, lora=lora)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_()  # peft starts B at 0: make the adapters do something
    ours = merged_state_dict({k: v.clone() for k, v in model.state_dict().items()}, lora)
    reference = model.merge_and_unload().state_dict()
    assert set(ours) == set(reference)
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], atol=1e-6, rtol=1e-6)
    plain, _ = load_model(tiny_model_dir)
    assert not torch.allclose(
        ours["model.layers.0.self_attn.q_proj.weight"],
        plain.state_dict()["model.layers.0.self_attn.q_proj.weight"],
    )


@pytest.fixture
def distributed() -> Iterator[DistributedEnv]:
    env = init_distributed(DeepSpeedSettings())
    yield env
    shutdown_distributed(env)


@pytest.mark.parametrize(
    ("zero_stage", "lora"),
    [
        (0, None),
        (3, None),
        (2, LoraSettings(r=4, alpha=16, target_modules=["q_proj", "o_proj"])),
        (3, LoraSettings(r=4, alpha=16, target_modules=["v_proj", "up_proj"])),
    ],
)
def test_a_checkpoint_reloads_to_the_same_logits(
    tiny_model_dir: Path,
    traces_file: Path,
    tmp_path: Path,
    distributed: DistributedEnv,
    zero_stage: int,
    lora: LoraSettings | None,
) -> None:
    config = sft_config(
        tiny_model_dir,
        traces_file,
        tmp_path / "out",
        deepspeed={"zero_stage": zero_stage},
        lora=lora.model_dump() if lora else None,
        learning_rate=0.01,
    )
    model, tokenizer = load_for_training(tiny_model_dir, dtype=torch.float32, lora=config.lora)
    engine = TrainEngine(model, config, distributed, total_steps=5)
    batch = collate(TRACES, packing=True, pad_token_id=2)
    labels = batch.pop("labels")
    for _ in range(2):  # move the weights away from the starting model
        loss = per_token_nll(engine.forward(**batch, use_cache=False).logits, labels).sum()
        engine.backward(loss / 10)
        assert engine.step() is not None
    checkpointer = Checkpointer(
        config, engine, tokenizer, StartingModel(tiny_model_dir, ""), total_steps=5
    )
    directory = checkpointer.save(2, {"loss": 1.0}, {})
    engine.engine.eval()
    probe = torch.tensor([[1, 40, 41, 42, 50, 51]])
    with torch.no_grad(), engine.gathered_parameters():
        expected = engine.forward(input_ids=probe, use_cache=False).logits
    engine.close()

    reloaded, _ = load_model(directory / MODEL_DIR)
    with torch.no_grad():
        actual = reloaded(input_ids=probe).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    start, _ = load_model(tiny_model_dir)
    with torch.no_grad():
        assert not torch.allclose(start(input_ids=probe).logits, actual, atol=1e-3)
    # A plain HF directory: no adapter files, the chat template, what made it.
    files = {p.name for p in (directory / MODEL_DIR).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", TRAINING_INFO} <= files
    assert not any("adapter" in name for name in files)
    assert (directory / MODEL_DIR / "chat_template.jinja").read_text() == tokenizer.chat_template


def test_zero3_loads_weights_partitioned_and_switches_back(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path, distributed: DistributedEnv
) -> None:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from astro_core.training.models import prepare_model

    config = sft_config(tiny_model_dir, traces_file, tmp_path / "o", deepspeed={"zero_stage": 3})
    _, model, _ = prepare_model(config, None, distributed)
    weight = model.get_input_embeddings().weight
    assert weight.numel() == 0 and tuple(weight.ds_shape) == (507, 128)  # a partition only
    assert not is_deepspeed_zero3_enabled()  # a later plain load is not partitioned
    config0 = sft_config(tiny_model_dir, traces_file, tmp_path / "o", deepspeed={"zero_stage": 0})
    _, plain, _ = prepare_model(config0, None, distributed)
    assert plain.get_input_embeddings().weight.shape == (507, 128)
