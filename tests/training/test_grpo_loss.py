"""The GRPO loss and its gradient against an independent reference written out here.

The reference scores one sequence at a time (no padding, no micro-batches), with plain Python
for the group statistics and the reductions; the trainer's path pads, micro-batches and sums.
Both run the real tiny Llama, and must agree on the loss and on every parameter's gradient.
"""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest
import torch

from astro_core.models.tiny import TinyModelSpec, build_tiny_model, load_model
from astro_core.training.grpo_loss import group_advantages, token_weights
from astro_core.training.rollouts import Rollout, build_step_batch, rows_loss, set_weights

G = 4
MAX_LEN = 6


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    # float64, so the two paths' different summation orders agree to 1e-9
    policy, _ = load_model(tiny_model_dir, dtype=torch.float64)
    ref_dir = build_tiny_model(tmp_path_factory.mktemp("ref"), TinyModelSpec(seed=3))
    reference, _ = load_model(ref_dir, dtype=torch.float64)
    for p in reference.parameters():
        p.requires_grad_(False)
    return policy, reference


def one_sequence_logprobs(model, prompt: tuple[int, ...], completion: tuple[int, ...]):
    """Log-probabilities of completion after prompt: one unpadded sequence."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[len(prompt) + t - 1, tok] for t, tok in enumerate(completion)]


def as_float32(x: float) -> float:
    """Rollout logprobs travel as float32 (as from the generator)."""
    return float(torch.tensor(x, dtype=torch.float32))


def make_rollouts(policy, seed: int) -> list[Rollout]:
    """3 groups of G: mixed rewards, mixed rewards with a truncated completion, all equal."""
    rng = random.Random(seed)
    rewards = [[1.0, -1.0, -1.0, 1.0], [1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]]
    rollouts = []
    for group, group_rewards in enumerate(rewards):
        prompt = tuple(rng.randrange(10, 500) for _ in range(rng.randint(2, 5)))
        for k, reward in enumerate(group_rewards):
            length = MAX_LEN if (group == 1 and k == 1) else rng.randint(1, MAX_LEN - 1)
            completion = tuple(rng.randrange(10, 500) for _ in range(length))
            with torch.no_grad():
                true = one_sequence_logprobs(policy, prompt, completion)
            # rollout logprobs off the current policy, so ratios differ from 1 and clip
            noisy = tuple(as_float32(float(lp) + rng.gauss(0.0, 0.3)) for lp in true)
            rollouts.append(
                Rollout(
                    group,
                    prompt,
                    completion,
                    noisy,
                    length == MAX_LEN,
                    reward,
                    reward > 0,
                    "",
                    0,
                    0,
                )
            )
    return rollouts


def reference_loss(
    policy,
    reference,
    rollouts,
    *,
    scale_rewards,
    loss_type,
    epsilon,
    epsilon_high,
    beta,
    mask_truncated,
):
    all_rewards = [r.reward for r in rollouts]
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group, []).append(r)
    counted = []  # (per-token losses, advantage) of sequences that count
    for members in groups.values():
        rewards = [m.reward for m in members]
        if len(set(rewards)) == 1:
            continue  # zero-variance group: skipped
        mean = sum(rewards) / len(rewards)
        if scale_rewards == "group":
            scale = statistics.stdev(rewards) + 1e-4
        elif scale_rewards == "batch":
            scale = statistics.stdev(all_rewards) + 1e-4
        else:
            scale = 1.0
        for m in members:
            if mask_truncated and m.truncated:
                continue
            advantage = (m.reward - mean) / scale
            logps = one_sequence_logprobs(policy, m.prompt_ids, m.completion_ids)
            refs = (
                one_sequence_logprobs(reference, m.prompt_ids, m.completion_ids) if beta else None
            )
            losses = []
            for t, logp in enumerate(logps):
                ratio = torch.exp(logp - m.rollout_logprobs[t])
                clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
                loss = -torch.minimum(ratio * advantage, clipped * advantage)
                if beta:
                    d = refs[t] - logp
                    loss = loss + beta * (torch.exp(d) - d - 1)
                losses.append(loss)
            counted.append(losses)
    if loss_type == "grpo":
        return sum(sum(s) / len(s) for s in counted) / len(counted)
    tokens = sum(len(s) for s in counted)
    total = sum(sum(s) for s in counted)
    if loss_type == "dapo":
        return total / tokens
    return total / (len(counted) * MAX_LEN)


def trainer_loss(
    policy,
    reference,
    rollouts,
    *,
    scale_rewards,
    loss_type,
    epsilon,
    epsilon_high,
    beta,
    mask_truncated,
    micro_batch,
):
    batch = build_step_batch(
        rollouts,
        G,
        scale_rewards=scale_rewards,
        mask_truncated_completions=mask_truncated,
        pad_id=2,
    )
    set_weights(batch, loss_type, MAX_LEN)
    if beta:
        from astro_core.training.rollouts import sequence_logprobs

        with torch.no_grad():
            batch.ref_logprobs = sequence_logprobs(reference, batch)
    total, clipped = 0.0, 0.0
    for start in range(0, batch.num_rows, micro_batch):
        parts = rows_loss(
            policy,
            batch.rows(start, start + micro_batch),
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            beta=beta,
        )
        parts.loss.backward()
        total += float(parts.loss.detach())
        clipped += parts.clipped_tokens
    return total, batch, clipped


CASES = [
    dict(
        scale_rewards=s, loss_type=lt, epsilon=0.2, epsilon_high=0.2, beta=0.0, mask_truncated=False
    )
    for s in ("group", "batch", "none")
    for lt in ("grpo", "dapo", "dr_grpo")
] + [
    dict(
        scale_rewards="group",
        loss_type="grpo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        mask_truncated=False,
    ),
    dict(
        scale_rewards="group",
        loss_type="dapo",
        epsilon=0.1,
        epsilon_high=0.3,
        beta=0.04,
        mask_truncated=False,
    ),
    dict(
        scale_rewards="none",
        loss_type="dr_grpo",
        epsilon=0.2,
        epsilon_high=0.2,
        beta=0.1,
        mask_truncated=True,
    ),
    dict(
        scale_rewards="group",
        loss_type="grpo",
        epsilon=0.2,
        epsilon_high=0.2,
        beta=0.0,
        mask_truncated=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_loss_and_gradient_match_the_reference(models, case) -> None:
    policy, reference = models
    rollouts = make_rollouts(policy, seed=7)
    policy.zero_grad()
    expected = reference_loss(policy, reference, rollouts, **case)
    expected.backward()
    expected = float(expected.detach())
    want = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad()
    got, batch, clipped = trainer_loss(policy, reference, rollouts, micro_batch=3, **case)
    assert clipped > 0  # the clip bounds are exercised, not just the ratio
    assert batch.skipped_groups == 1
    assert batch.num_rows == 2 * G  # the all-equal group's rows are not trained on
    assert got == pytest.approx(expected, rel=1e-6)
    for name, param in policy.named_parameters():
        scale = float(want[name].abs().max())
        assert scale > 0, f"{name} gets no gradient"
        torch.testing.assert_close(
            param.grad, want[name], rtol=1e-5, atol=1e-6 * scale, msg=lambda m, n=name: f"{n}: {m}"
        )
    policy.zero_grad()


def test_micro_batching_does_not_change_the_gradient(models) -> None:
    policy, reference = models
    rollouts = make_rollouts(policy, seed=11)
    case = CASES[0]
    grads = []
    for micro_batch in (1, 8):
        policy.zero_grad()
        trainer_loss(policy, reference, rollouts, micro_batch=micro_batch, **case)
        grads.append([p.grad.clone() for p in policy.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    policy.zero_grad()


def test_group_advantages_values() -> None:
    rewards = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, 4, "group")
    std = statistics.stdev([1, -1, -1, -1])
    assert adv.values[:4].tolist() == pytest.approx(
        [(1 + 0.5) / (std + 1e-4)] + [(-1 + 0.5) / (std + 1e-4)] * 3, rel=1e-6
    )
    assert adv.values[4:].tolist() == [0.0] * 4
    assert adv.zero_variance.tolist() == [False, True]
    none = group_advantages(rewards, 4, "none")
    assert none.values.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])
    batch = group_advantages(rewards, 4, "batch")
    batch_std = statistics.stdev(rewards.tolist())
    assert batch.values[0].item() == pytest.approx(1.5 / (batch_std + 1e-4))


def test_group_advantages_rejects_a_partial_group() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        group_advantages(torch.zeros(6), 4)


def test_token_weights_of_an_all_masked_batch_are_zero() -> None:
    mask = torch.zeros(3, 5)
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        weights = token_weights(mask, loss_type, 5)  # type: ignore[arg-type]
        assert not weights.any() and not math.isnan(float(weights.sum()))
