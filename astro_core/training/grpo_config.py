"""GRPOConfig: RL with verifiable rewards (defaults = the paper's values where it gives them).

The paper (ASTRO, Kim et al. 2025) runs GRPO from the SFT checkpoint with reward +1 for a
correct final answer and -1 otherwise, groups of 4 completions per prompt, on 8.7K prompts of
moderate difficulty (see `astro train select-prompts`). What it does not state (learning rate,
batch, clipping, completion budget) is ours and marked so in `presets/grpo-paper.yaml`.
`presets/grpo-cpu.yaml` trains the tiny model on CPU in seconds.

Names follow TRL's GRPOConfig where they mean the same thing. As in TRL,
`per_device_train_batch_size` counts completions: a step generates
per_device_train_batch_size x gradient_accumulation_steps completions per rank, that is
that many / num_generations prompts.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from astro_core.prompts import SOLVE_INSTRUCTION
from astro_core.training.config import TrainerConfig
from astro_core.training.grpo_loss import LossType, ScaleRewards
from astro_core.training.policy_sync import RegistryLoad

SyncKind = Literal["auto", "colocate", "registry"]


class GRPOConfig(TrainerConfig):
    """GRPO on prompts with gold answers (JSONL with `problem` and `answer`)."""

    stage: ClassVar[str] = "grpo"

    # -- optimisation (overrides of TrainerConfig's SFT-minded defaults) --------------------
    learning_rate: float = Field(
        1e-6, gt=0, le=1, description="Peak learning rate of AdamW (not stated in the paper)."
    )
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = Field(
        "constant", description="Decay after warmup: cosine to 0, linear to 0, or constant."
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, le=65536, description="Completions per micro-batch on each rank."
    )

    # -- sampling -------------------------------------------------------------------------
    num_generations: int = Field(
        4, ge=2, le=1024, description="Completions per prompt: the group size G (paper: 4)."
    )
    max_completion_length: int = Field(
        8192, ge=1, le=1_048_576, description="Token budget of one completion."
    )
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    instruction: str = Field(
        SOLVE_INSTRUCTION, description="Appended to each problem in the user turn."
    )
    generation_timeout_seconds: float = Field(
        1800.0, gt=0, description="Longest wait for one step's completions."
    )
    shuffle_dataset: bool = Field(
        True, description="Shuffle the prompts every epoch (seeded by seed and epoch)."
    )

    # -- rewards and the objective --------------------------------------------------------
    reward_correct: float = Field(1.0, description="Reward of a correct final answer (+1).")
    reward_incorrect: float = Field(-1.0, description="Reward of any other completion (-1).")
    scale_rewards: ScaleRewards = Field(
        "group",
        description="Advantage = reward - group mean, divided by the group's std (group), "
        "the batch's std (batch) or nothing (none, Dr. GRPO).",
    )
    loss_type: LossType = Field(
        "grpo",
        description="grpo: mean over each completion's tokens, then over completions; dapo: "
        "mean over all tokens of the step; dr_grpo: token sum / (completions x "
        "max_completion_length).",
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Lower clip of the importance ratio.")
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clip of the ratio (DAPO's clip-higher); null: epsilon."
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="KL penalty to the starting policy; 0 loads no reference model.",
    )
    num_iterations: int = Field(
        1, ge=1, le=64, description="Optimizer steps taken on each batch of rollouts (mu)."
    )
    mask_truncated_completions: bool = Field(
        False,
        description="Leave completions that hit max_completion_length out of the loss.",
    )

    # -- policy sync ----------------------------------------------------------------------
    policy_sync: SyncKind = Field(
        "auto",
        description="colocate: an in-process engine updated in place; registry: save, "
        "register, the generator service loads it; auto: registry when generator_address "
        "is set, else colocate.",
    )
    registry_load: RegistryLoad = Field(
        "load_model",
        description="registry sync: call the generator's LoadModel, or wait for a generator "
        "that follows sync_alias to serve the new version.",
    )
    sync_alias: str = Field(
        "latest", description="registry sync: the alias a following generator watches."
    )
    sync_timeout_seconds: float = Field(
        600.0, gt=0, description="A policy sync that takes longer raises (no silent hang)."
    )
    max_policy_lag: int = Field(
        1,
        ge=0,
        description="Refuse rollouts generated by a policy more than this many versions "
        "(optimizer steps) behind the one being trained.",
    )

    @model_validator(mode="after")
    def _whole_groups(self) -> GRPOConfig:
        completions = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if completions % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps ({completions}) "
                f"must be a multiple of num_generations ({self.num_generations}): a step "
                "trains on whole groups"
            )
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(
                f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon})"
            )
        if self.reward_correct <= self.reward_incorrect:
            raise ValueError("reward_correct must be greater than reward_incorrect")
        return self

    @property
    def prompts_per_step(self) -> int:
        """Prompts each rank draws per generation batch."""
        completions = self.per_device_train_batch_size * self.gradient_accumulation_steps
        return completions // self.num_generations

    def sync_kind(self) -> Literal["colocate", "registry"]:
        if self.policy_sync != "auto":
            return self.policy_sync
        return "registry" if self.generator_address else "colocate"
