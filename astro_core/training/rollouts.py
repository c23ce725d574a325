"""GRPO rollouts: G completions per prompt from a `Generator`, rewards from a `Verifier`, and the
tensors one optimizer step trains on.

The trainer trains on exactly the tokens the generator sampled (`Completion.token_ids`) with the
log-probabilities it reported: completion text is never re-tokenized, since a different split of
the same text would silently pair log-probabilities with the wrong tokens. Prompts are text the
trainer rendered itself and are encoded the way the engines encode them (`encode_prompt`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from astro_core.cloning.parse import count_backtracks
from astro_core.engines.base import InvalidRequest, encode_prompt
from astro_core.problems import Problem
from astro_core.prompts import SOLVE_INSTRUCTION, ChatTemplate, problem_messages
from astro_core.protocols import Completion, Generator, RewardMapping, Verifier, VerifyItem
from astro_core.training.grpo_loss import (
    LossParts,
    LossType,
    ScaleRewards,
    completion_logprobs,
    group_advantages,
    policy_loss,
    token_weights,
)


class RolloutError(RuntimeError):
    """The generator's completions cannot be trained on; the message says why."""


class PolicyLagError(RolloutError):
    """Completions came from a policy older than max_policy_lag versions allow."""


class ServedModelMismatch(RolloutError):
    """The generator serves a model that is not (a version of) the policy being trained."""


def backtracks_in(text: str) -> int:
    """Backtracks per completion for the step log. The one call site of the counter, so that a
    shared counter (astro_core.analysis) can replace the cloning module's here alone."""
    return count_backtracks(text)


@dataclass(frozen=True)
class RLPrompt:
    """A problem rendered as the policy's prompt, and its token ids."""

    problem: Problem
    text: str
    ids: tuple[int, ...]


def render_prompts(
    problems: Sequence[Problem],
    template: ChatTemplate,
    tokenizer: Any,
    instruction: str = SOLVE_INSTRUCTION,
) -> list[RLPrompt]:
    """The chat prompt of each problem, encoded as the engines encode prompts."""
    prompts = []
    for problem in problems:
        text = prompt_text(problem, template, instruction)
        prompts.append(RLPrompt(problem, text, tuple(encode_prompt(tokenizer, text))))
    return prompts


def prompt_text(
    problem: Problem, template: ChatTemplate, instruction: str = SOLVE_INSTRUCTION
) -> str:
    """The policy's prompt for a problem: its chat template over the problem's user turn."""
    return template.render(problem_messages(problem.problem, instruction))


@dataclass(frozen=True)
class Rollout:
    """One completion with everything the update and the log need."""

    group: int  # which prompt of the step it answers (its group of G)
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    rollout_logprobs: tuple[float, ...]
    truncated: bool  # the token budget ran out (finish_reason "length")
    reward: float
    correct: bool
    text: str
    policy_version: int  # the policy version that generated it
    backtracks: int


@dataclass(frozen=True)
class SamplingSettings:
    """How rollouts are sampled (the GRPOConfig fields of the same names)."""

    num_generations: int
    max_completion_length: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


def check_completion(completion: Completion, where: str) -> None:
    """Raise RolloutError unless the completion carries its token ids and log-probabilities."""
    if not completion.token_ids:
        raise RolloutError(
            f"{where}: the generator returned no token ids; GRPO trains on the exact sampled "
            "tokens (Completion.token_ids), so the generator must send them"
        )
    if len(completion.token_ids) != completion.num_tokens:
        raise RolloutError(
            f"{where}: {len(completion.token_ids)} token ids for {completion.num_tokens} tokens"
        )
    if len(completion.token_logprobs) != len(completion.token_ids):
        raise RolloutError(
            f"{where}: {len(completion.token_logprobs)} log-probabilities for "
            f"{len(completion.token_ids)} tokens; the generator must return per-token logprobs"
        )


def collect_rollouts(
    generator: Generator,
    verifier: Verifier,
    prompts: Sequence[RLPrompt],
    sampling: SamplingSettings,
    rewards: RewardMapping,
    *,
    version_of: Callable[[str], int],
    policy_version: int,
    max_policy_lag: int,
    vocab_size: int,
) -> list[Rollout]:
    """G completions per prompt, scored; groups are adjacent, in prompt order.

    `version_of` maps a completion's model_version to the policy version that produced it
    (raising ServedModelMismatch for a model that is not the policy); a completion more than
    max_policy_lag versions behind `policy_version` raises PolicyLagError.
    """
    g = sampling.num_generations
    try:
        completions = generator.generate(
            [p.text for p in prompts],
            n=g,
            max_tokens=sampling.max_completion_length,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            logprobs=True,
        )
    except InvalidRequest as exc:  # e.g. a prompt longer than the served model accepts
        raise RolloutError(f"the generator refused the prompts: {exc}") from exc
    if len(completions) != len(prompts) * g:
        raise RolloutError(
            f"the generator returned {len(completions)} completions for {len(prompts)} prompts "
            f"x {g}; expected {len(prompts) * g}"
        )
    versions: dict[str, int] = {}
    for index, completion in enumerate(completions):
        where = f"completion {index} (prompt {index // g})"
        if completion.prompt_index != index // g:
            raise RolloutError(
                f"{where} says it answers prompt {completion.prompt_index}: the generator "
                f"must return the {g} completions of prompt i at [i*{g}, (i+1)*{g})"
            )
        check_completion(completion, where)
        if completion.num_tokens > sampling.max_completion_length:
            raise RolloutError(
                f"{where} has {completion.num_tokens} tokens, over max_completion_length "
                f"{sampling.max_completion_length}"
            )
        if max(completion.token_ids) >= vocab_size or min(completion.token_ids) < 0:
            raise ServedModelMismatch(
                f"{where} holds token ids outside the policy's vocabulary of {vocab_size}: "
                "the generator serves a different model"
            )
        if completion.model_version not in versions:
            versions[completion.model_version] = version_of(completion.model_version)
        lag = policy_version - versions[completion.model_version]
        if lag > max_policy_lag:
            raise PolicyLagError(
                f"{where} came from {completion.model_version} (policy version "
                f"{versions[completion.model_version]}), {lag} versions behind the policy "
                f"(version {policy_version}); max_policy_lag is {max_policy_lag}"
            )
    results = verifier.verify_batch(
        [
            VerifyItem(c.text, prompts[i // g].problem.answer, prompts[i // g].problem.problem)
            for i, c in enumerate(completions)
        ],
        rewards,
    )
    if len(results) != len(completions):
        raise RolloutError(
            f"the verifier returned {len(results)} results for {len(completions)} completions"
        )
    for index, result in enumerate(results):
        if not math.isfinite(result.reward):
            raise RolloutError(f"the verifier gave completion {index} the reward {result.reward}")
    return [
        Rollout(
            group=i // g,
            prompt_ids=prompts[i // g].ids,
            completion_ids=tuple(c.token_ids),
            rollout_logprobs=tuple(c.token_logprobs),
            truncated=c.finish_reason == "length",
            reward=r.reward,
            correct=r.correct,
            text=c.text,
            policy_version=versions[c.model_version],
            backtracks=backtracks_in(c.text),
        )
        for i, (c, r) in enumerate(zip(completions, results, strict=True))
    ]


@dataclass
class StepBatch:
    """The rows one generation batch trains on: groups with reward variance only.

    Prompts are left-padded and completions right-padded, so every completion starts at the
    same column and the model computes logits for the completion columns alone.
    """

    prompt_ids: torch.Tensor  # [N, P]
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, C]
    completion_mask: torch.Tensor  # [N, C] real (non-padding) completion tokens
    loss_mask: torch.Tensor  # [N, C] tokens that count in the loss
    rollout_logprobs: torch.Tensor  # [N, C]
    advantages: torch.Tensor  # [N]
    skipped_groups: int  # groups dropped for zero reward variance
    weights: torch.Tensor | None = None  # [N, C] loss weight per token (set_weights)
    ref_logprobs: torch.Tensor | None = None  # [N, C], when beta > 0

    @property
    def num_rows(self) -> int:
        return int(self.completion_ids.shape[0])

    def rows(self, start: int, stop: int) -> StepBatch:
        """Rows [start, stop), trimmed to their own widest prompt and completion."""
        prompt_mask = self.prompt_mask[start:stop]
        completion_mask = self.completion_mask[start:stop]
        p = int(prompt_mask.sum(1).max()) if stop > start else 0
        c = int(completion_mask.sum(1).max()) if stop > start else 0
        width = self.prompt_ids.shape[1]
        weights, ref = self.weights, self.ref_logprobs
        return StepBatch(
            self.prompt_ids[start:stop, width - p :],
            prompt_mask[:, width - p :],
            self.completion_ids[start:stop, :c],
            completion_mask[:, :c],
            self.loss_mask[start:stop, :c],
            self.rollout_logprobs[start:stop, :c],
            self.advantages[start:stop],
            0,
            None if weights is None else weights[start:stop, :c],
            None if ref is None else ref[start:stop, :c],
        )


def build_step_batch(
    rollouts: Sequence[Rollout],
    group_size: int,
    *,
    scale_rewards: ScaleRewards,
    mask_truncated_completions: bool,
    pad_id: int,
) -> StepBatch:
    """Advantages over all rollouts; rows of zero-variance groups dropped (they would only add
    compute: their advantages are 0); truncated completions kept but not counted when masked."""
    rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float64)
    advantages = group_advantages(rewards, group_size, scale_rewards)
    keep = [i for i, r in enumerate(rollouts) if not advantages.zero_variance[r.group]]
    kept = [rollouts[i] for i in keep]
    n = len(kept)
    p = max((len(r.prompt_ids) for r in kept), default=0)
    c = max((len(r.completion_ids) for r in kept), default=0)
    prompt_ids = torch.full((n, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, p), dtype=torch.long)
    completion_ids = torch.full((n, c), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((n, c), dtype=torch.long)
    logprobs = torch.zeros((n, c), dtype=torch.float32)
    for row, r in enumerate(kept):
        lp, lc = len(r.prompt_ids), len(r.completion_ids)
        prompt_ids[row, p - lp :] = torch.tensor(r.prompt_ids)
        prompt_mask[row, p - lp :] = 1
        completion_ids[row, :lc] = torch.tensor(r.completion_ids)
        completion_mask[row, :lc] = 1
        logprobs[row, :lc] = torch.tensor(r.rollout_logprobs)
    loss_mask = completion_mask.clone()
    if mask_truncated_completions:
        truncated = torch.tensor([r.truncated for r in kept], dtype=torch.bool)
        loss_mask[truncated] = 0
    return StepBatch(
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        loss_mask,
        logprobs,
        advantages.values[keep],
        int(advantages.zero_variance.sum()),
    )


def set_weights(
    batch: StepBatch,
    loss_type: LossType,
    max_completion_length: int,
    *,
    total_sequences: float | None = None,
    total_tokens: float | None = None,
) -> None:
    """Per-token loss weights of the whole step batch (see grpo_loss.token_weights); the
    totals are those over every rank when training data-parallel."""
    batch.weights = token_weights(
        batch.loss_mask,
        loss_type,
        max_completion_length,
        total_sequences=total_sequences,
        total_tokens=total_tokens,
    )


def sequence_logprobs(model: Any, batch: StepBatch) -> torch.Tensor:
    """The model's log-probabilities [N, C] of the batch's completion tokens (raw logits, as
    the generators report them). Padding columns hold garbage and must be masked by the caller."""
    device = next(model.parameters()).device
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1).to(device)
    attention = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1).to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    width = batch.completion_ids.shape[1]
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        logits_to_keep=width + 1,
        use_cache=False,
    )
    # Logits at column t predict token t + 1: the last prompt column predicts completion 0.
    return completion_logprobs(out.logits[:, :-1], input_ids[:, -width:])


def rows_loss(
    model: Any,
    rows: StepBatch,
    *,
    epsilon: float,
    epsilon_high: float | None,
    beta: float,
) -> LossParts:
    """The loss of some rows of a step batch whose weights are set (a micro-batch)."""
    if rows.weights is None:
        raise ValueError("set the batch's weights (set_weights) before computing its loss")
    device = next(model.parameters()).device
    logprobs = sequence_logprobs(model, rows)
    ref = rows.ref_logprobs
    return policy_loss(
        logprobs,
        rows.rollout_logprobs.to(device),
        rows.advantages.to(device),
        rows.weights.to(device),
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        beta=beta,
        ref_logprobs=None if ref is None else ref.to(device),
    )
