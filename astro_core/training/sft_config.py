"""SFTConfig: supervised fine-tuning on procedure-cloning traces (defaults = the paper's).

The paper fine-tunes the full model for 1 epoch at learning rate 3e-6 with a cosine schedule,
context 8192 tokens, loss on ALL tokens (prompt included). What it does not state (batch size,
warmup, ZeRO stage) is ours and marked so in `presets/sft-paper.yaml`. `presets/sft-cpu.yaml`
trains the tiny model on CPU in seconds.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from astro_core.training.config import TrainerConfig


class SFTConfig(TrainerConfig):
    """Supervised fine-tuning on chat traces (the JSONL `astro clone` writes)."""

    stage: ClassVar[str] = "sft"

    max_length: int = Field(
        8192, ge=2, le=1_048_576, description="Longest sequence in tokens (prompt + trace)."
    )
    overlong: Literal["truncate", "drop"] = Field(
        "truncate",
        description="A sequence over max_length is cut to its first max_length tokens "
        "(truncate) or left out (drop); how many is reported.",
    )
    packing: bool = Field(
        True,
        description="Padding-free batches: a micro-batch is one row of its sequences end to "
        "end, positions restarting per sequence and attention kept within each one. "
        "false: padded rows.",
    )
    group_by_length: bool = Field(
        False,
        description="Padded batches only: group sequences of similar length (less padding).",
    )
    assistant_only_loss: bool = Field(
        False,
        description="Loss on assistant turns only (the prompt is masked); false: on all "
        "tokens, as the paper.",
    )
    shuffle_dataset: bool = Field(
        True, description="Shuffle the traces every epoch (seeded by seed and epoch)."
    )
