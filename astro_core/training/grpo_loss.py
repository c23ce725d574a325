"""The GRPO objective: group-relative advantages and the clipped importance-ratio surrogate.

Everything here is plain tensor math on one step's batch, so a test can check it against an
independent computation. Notation (one row per completion, C completion positions):

- advantages: r_i minus the mean reward of its group of G completions, divided by the group's
  std (`scale_rewards="group"`), the whole batch's std ("batch") or nothing ("none", Dr. GRPO).
- per-token loss: -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A), with
  ratio = exp(logp - logp_rollout), plus beta * KL(policy || reference) (the k3 estimator).
- reduction (`loss_type`): "grpo" averages each sequence over its tokens, then sequences;
  "dapo" averages over every token of the batch; "dr_grpo" sums tokens and divides by
  sequences x max_completion_length.

The reduction is written as a weight per token computed over the whole step batch, so the sum
of the micro-batches' losses equals the full-batch loss exactly, whatever the micro-batching.
Sequences without a counted token (zero-variance groups, masked truncated completions) count
in no denominator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["grpo", "dapo", "dr_grpo"]
# Added to the std before dividing (TRL's value): a group of nearly equal rewards does not
# blow its advantages up.
STD_EPSILON = 1e-4


@dataclass(frozen=True)
class Advantages:
    """One advantage per completion, and which groups had no reward variance."""

    values: torch.Tensor  # [N]
    zero_variance: torch.Tensor  # [N // G] bool: every completion of the group scored the same


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: ScaleRewards = "group"
) -> Advantages:
    """Group-relative advantages of rewards [N] (N a multiple of group_size, groups adjacent)."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be one value per completion, a multiple of {group_size} of them; "
            f"got shape {tuple(rewards.shape)}"
        )
    rewards = rewards.double()
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    zero_variance = grouped.amax(dim=1) == grouped.amin(dim=1)
    if scale_rewards == "group":
        std = grouped.std(dim=1) if group_size > 1 else torch.zeros(len(grouped))
        centred = centred / (std.repeat_interleave(group_size) + STD_EPSILON)
    elif scale_rewards == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.zeros(())
        centred = centred / (std + STD_EPSILON)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    return Advantages(centred.float(), zero_variance)


def token_weights(
    mask: torch.Tensor,
    loss_type: LossType,
    max_completion_length: int,
    *,
    total_sequences: float | None = None,
    total_tokens: float | None = None,
) -> torch.Tensor:
    """Weight of each completion token in the step's loss, from the counted-token mask [N, C].

    `total_sequences` / `total_tokens` are the counts over the whole step (every micro-batch
    and rank); by default those of `mask` itself.
    """
    mask = mask.float()
    lengths = mask.sum(dim=1)
    if total_sequences is None:
        total_sequences = float((lengths > 0).sum())
    if total_tokens is None:
        total_tokens = float(lengths.sum())
    if total_tokens == 0:
        return torch.zeros_like(mask)
    if loss_type == "grpo":
        return mask / (lengths.clamp(min=1) * total_sequences)[:, None]
    if loss_type == "dapo":
        return mask / total_tokens
    if loss_type == "dr_grpo":
        return mask / (total_sequences * max_completion_length)
    raise ValueError(f"loss_type must be grpo, dapo or dr_grpo, got {loss_type!r}")


@dataclass(frozen=True)
class LossParts:
    """A micro-batch's loss and what it is made of (statistics are over counted tokens)."""

    loss: torch.Tensor  # scalar, differentiable
    clipped_tokens: float  # tokens whose clipped term was the active one
    counted_tokens: float
    kl_sum: float  # sum of the per-token KL over counted tokens (0 when beta == 0)
    ratio_sum: float


def policy_loss(
    logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
) -> LossParts:
    """The clipped surrogate (plus beta * KL) of a micro-batch, reduced with `weights`.

    logprobs [B, C] are the policy's (with grad), rollout_logprobs [B, C] the generator's for
    the same tokens, advantages [B], weights [B, C] from `token_weights` (0 off the mask).
    """
    high = epsilon if epsilon_high is None else epsilon_high
    counted = weights != 0
    ratio = torch.exp(logprobs - rollout_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl_sum = 0.0
    if beta != 0.0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs the reference model's logprobs")
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
        kl_sum = float(kl.detach()[counted].sum())
    loss = (per_token * weights).sum()
    with torch.no_grad():
        is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        clipped_tokens = float((is_clipped & counted).sum())
        ratio_sum = float(ratio[counted].sum())
    return LossParts(loss, clipped_tokens, float(counted.sum()), kl_sum, ratio_sum)


def completion_logprobs(
    logits: torch.Tensor, completion_ids: torch.Tensor, chunk_rows: int = 1
) -> torch.Tensor:
    """Log-probabilities [B, C] of completion_ids under logits [B, C, V] (raw, no temperature:
    the generators report the model's raw distribution too). Rows are done a few at a time so
    only a few rows of float32 log-softmax exist at once (V can be 150K)."""
    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        rows = logits[start : start + chunk_rows]
        rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
        picked = rows.gather(-1, completion_ids[start : start + chunk_rows, :, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    return torch.cat(out)
