"""GRPO with verifiable rewards, on DeepSpeed.

    result = train_grpo(load_train_config(GRPOConfig, "grpo.yaml"), TrainingServices(...))

A generation batch: this rank's prompts -> G completions each from the generator serving the
current policy (`policy_sync`) -> rewards from the verifier -> group-relative advantages ->
`num_iterations` optimizer steps on the clipped surrogate (`grpo_loss`), each step's loss
normalised over every rank and micro-batch -> the new policy is pushed to the generator
before the next batch is drawn. Checkpoints, registration, resume and the log are the shared
machinery (`checkpointing.py`, `train_log.py`).

Policy versions are optimizer steps: the starting model is version 0, and the generator
serves version s once the policy after step s was pushed. A checkpoint is saved at a batch
boundary only (save_steps is a multiple of num_iterations), so a resumed run regenerates the
same rollouts from the same weights and seeds and continues the same trajectory.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.config import ConfigError
from astro_core.engines.base import chat_template_of, directory_version
from astro_core.engines.config import EngineConfig
from astro_core.engines.hf import HFEngine
from astro_core.models.tiny import load_model
from astro_core.problems import Problem
from astro_core.protocols import RewardMapping, Verifier
from astro_core.training.checkpointing import (
    Checkpointer,
    file_sha256,
    previous_starting_model,
    save_hf_model,
)
from astro_core.training.engine import (
    DistributedEnv,
    TrainEngine,
    all_reduce_sum,
    init_distributed,
    shutdown_distributed,
)
from astro_core.training.grpo_config import GRPOConfig
from astro_core.training.job import TrainingServices, TrainResult
from astro_core.training.models import base_model, merged_state_dict, prepare_model
from astro_core.training.policy_sync import (
    ColocateSync,
    ModelServer,
    PolicySync,
    RegistrySync,
)
from astro_core.training.rollouts import (
    Rollout,
    SamplingSettings,
    StepBatch,
    build_step_batch,
    collect_rollouts,
    render_prompts,
    rows_loss,
    sequence_logprobs,
    set_weights,
)
from astro_core.training.select_prompts import read_prompt_rows
from astro_core.training.train_log import TrainLogger


def total_steps_for(config: GRPOConfig, num_prompts: int, world_size: int) -> int:
    """Optimizer steps of the run: max_steps, else enough batches for num_train_epochs."""
    if config.max_steps > 0:
        return config.max_steps
    per_batch = config.prompts_per_step * world_size
    batches = max(1, math.ceil(config.num_train_epochs * num_prompts / per_batch))
    return batches * config.num_iterations


def prompt_order(num_prompts: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    order = list(range(num_prompts))
    if shuffle:
        random.Random(f"grpo:{seed}:{epoch}").shuffle(order)
    return order


def sampling_seed(seed: int, batch: int, rank: int) -> int:
    """The generation seed of one rank's batch: a resumed run draws the same completions."""
    digest = hashlib.sha256(f"{seed}:{batch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def train_grpo(config: GRPOConfig, services: TrainingServices) -> TrainResult:
    """Train (or resume, or find finished) the run in config.output_dir."""
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"train_grpo needs a GRPOConfig, got {type(config).__name__}")
    rows = read_prompt_rows(config.dataset)  # bad data fails before any set-up
    if config.save_steps % config.num_iterations:
        raise ConfigError(
            f"save_steps ({config.save_steps}) must be a multiple of num_iterations "
            f"({config.num_iterations}): checkpoints fall between batches of rollouts"
        )
    env = init_distributed(config.deepspeed)
    try:
        return _GRPORun(config, services, env, [r.problem for r in rows]).run()
    finally:
        shutdown_distributed(env)


class _LivePolicy:
    """The policy being trained, as PolicySync reads it (LoRA merged, ZeRO-3 gathered)."""

    def __init__(self, run: _GRPORun) -> None:
        self.run = run

    def named_tensors(self) -> Iterable[tuple[str, torch.Tensor]]:
        engine, lora = self.run.engine, self.run.config.lora
        with engine.gathered_parameters():
            state = {k: v.detach() for k, v in engine.module.state_dict().items()}
            merged = merged_state_dict(state, lora)
            if engine.zero_stage == 3:  # gathered storage is freed when the block ends
                merged = {k: v.clone() for k, v in merged.items()}
        return merged.items()

    def save_pretrained(self, directory: Path) -> None:
        run = self.run
        state = run.engine.full_state_dict()
        save_hf_model(
            run.engine.module,
            run.tokenizer,
            state,
            directory,
            {"stage": "grpo", "purpose": "policy sync", "run_id": run.config.run_id},
            run.config,
        )


class _GRPORun:
    def __init__(
        self,
        config: GRPOConfig,
        services: TrainingServices,
        env: DistributedEnv,
        problems: list[Problem],
    ) -> None:
        self.config = config
        self.services = services
        self.env = env
        self.problems = problems
        self.output_dir = Path(config.output_dir)
        if env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if env.world_size > 1 and config.sync_kind() == "registry":
            raise ConfigError(
                "registry policy sync trains on one rank; use colocate sync for several"
            )
        model_ref = previous_starting_model(self.output_dir) or config.model
        self.starting, model, self.tokenizer = prepare_model(config, services.store, env, model_ref)
        self.vocab_size = int(base_model(model).config.vocab_size)
        self.total_steps = total_steps_for(config, len(problems), env.world_size)
        self.engine = TrainEngine(model, config, env, self.total_steps)
        self.checkpointer = Checkpointer(
            config,
            self.engine,
            self.tokenizer,
            self.starting,
            self.total_steps,
            services.store,
            data_fingerprint=file_sha256(config.dataset),
        )
        self.logger = TrainLogger(
            self.output_dir,
            stage=config.stage,
            run_id=config.run_id,
            total_steps=self.total_steps,
            sinks=services.sinks,
            enabled=env.is_main,
        )
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self.rewards = RewardMapping(config.reward_correct, config.reward_incorrect)
        self.template = chat_template_of(self.tokenizer)
        self._orders: dict[int, list[int]] = {}
        self._owned_verifier: VerifierPool | None = None
        self._opened_sync: PolicySync | None = None
        try:  # what is started here ends here if a later part of the set-up fails
            self.sync = self._opened_sync = self._make_sync()
            self.verifier: Verifier = services.verifier or self._local_verifier()
            self.reference = self._reference_model() if config.beta > 0 else None
        except BaseException:
            self._close()
            raise

    # -- set-up --------------------------------------------------------------------------

    def _local_verifier(self) -> Verifier:
        self._owned_verifier = VerifierPool(VerifierConfig(workers=1))
        return self._owned_verifier

    def _make_sync(self) -> PolicySync:
        config = self.config
        initial = self.starting.ref or directory_version(self.starting.path)
        if config.sync_kind() == "colocate":
            dtype = "bfloat16" if self.engine.bf16 else "float32"
            engine = HFEngine(
                EngineConfig(
                    model_path=str(self.starting.path),
                    model_version=initial,
                    device=str(self.env.device),
                    dtype=dtype,
                    cpu_threads=None,
                )
            )
            return ColocateSync(engine, config.sync_timeout_seconds)
        generator = self.services.generator
        if generator is None or not hasattr(generator, "load_model"):
            raise ConfigError(
                "registry policy sync needs the generator service (generator_address)"
            )
        if self.services.store is None or not config.output_name:
            raise ConfigError(
                "registry policy sync needs a registry (registry_address) and output_name"
            )
        server: ModelServer = generator  # type: ignore[assignment]
        return RegistrySync(
            server,
            self.services.store,
            name=config.output_name,
            initial_version=initial,
            work_dir=self.output_dir / "sync",
            load=config.registry_load,
            alias=config.sync_alias,
            parent_version=self.starting.version,
            timeout_seconds=config.sync_timeout_seconds,
        )

    def _reference_model(self) -> torch.nn.Module:
        dtype = torch.bfloat16 if self.engine.bf16 else torch.float32
        reference, _ = load_model(self.starting.path, self.env.device, dtype)
        for param in reference.parameters():
            param.requires_grad_(False)
        return reference

    # -- the run -------------------------------------------------------------------------

    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self._close()

    def _close(self) -> None:
        self.logger.close()
        self.engine.close()
        if self._opened_sync is not None:
            self._opened_sync.close()
        if self._owned_verifier is not None:
            self._owned_verifier.close()

    def _run(self) -> TrainResult:
        config = self.config
        state = self.checkpointer.resume()
        start = int(state["step"]) if state else 0
        metrics: dict[str, float] = dict(state.get("metrics", {})) if state else {}
        stage_state: dict[str, Any] = dict(state.get("stage_state", {})) if state else {}
        skipped_total = int(stage_state.get("skipped_groups_total", 0))
        self.logger.resume_at(start)
        self.logger.note(
            f"{self.total_steps} steps on {self.env.world_size} rank(s), "
            f"{len(self.problems)} prompts, {config.sync_kind()} sync, "
            + (f"resuming after step {start}" if start else f"from {self.starting.path}")
        )
        finished_before = bool(state and state.get("final"))
        if finished_before:
            return self._result(start, metrics, skipped_total)
        self.sync.start(_LivePolicy(self), start)
        window: list[dict[str, float]] = []
        step = start
        while step < self.total_steps:
            batch_index = step // config.num_iterations
            started = time.perf_counter()
            sync_seconds = self._sync_to(step)
            rollouts, generation_seconds = self._rollouts(batch_index, step)
            batch, counts = self._step_batch(rollouts)
            skipped_total += int(counts["skipped_groups"])
            for _ in range(config.num_iterations):
                if step >= self.total_steps:
                    break
                update_started = time.perf_counter()
                losses = self._optimizer_step(batch)
                step += 1
                now = time.perf_counter()
                window.append(
                    {
                        **counts,
                        **losses,
                        "policy_version": float(step),
                        "epoch": self._epoch(step),
                        "generation_seconds": generation_seconds,
                        "sync_seconds": sync_seconds,
                        "update_seconds": now - update_started,
                        "tokens_per_second": counts["completion_tokens"] / (now - started),
                    }
                )
                generation_seconds = sync_seconds = 0.0  # counted once per batch
                started = now
                if step % config.logging_steps == 0 or step == self.total_steps:
                    metrics = _window_mean(window)
                    self.logger.log(step, metrics)
                    window = []
                if config.save_steps and step % config.save_steps == 0 and step < self.total_steps:
                    self._save(step, metrics, {"skipped_groups_total": skipped_total})
        self._save(self.total_steps, metrics, {"skipped_groups_total": skipped_total})
        return self._result(start, metrics, skipped_total)

    def _result(self, start: int, metrics: dict[str, float], skipped: int) -> TrainResult:
        return TrainResult(
            stage=self.config.stage,
            output_dir=self.output_dir,
            steps=self.total_steps,
            resumed_from=start,
            metrics=metrics,
            checkpoints=list(self.checkpointer.saved),
            registered=list(self.checkpointer.registered),
            summary={"prompts": len(self.problems), "skipped_groups_total": skipped},
        )

    def _save(self, step: int, metrics: dict[str, float], stage_state: dict[str, Any]) -> None:
        directory = self.checkpointer.save(step, metrics, stage_state)
        info = self.checkpointer.registered[-1] if self.checkpointer.registered else None
        if info is not None and info.step != step:
            info = None
        self.logger.checkpoint(step, info, directory, metrics)

    def _epoch(self, step: int) -> float:
        batches = math.ceil(step / self.config.num_iterations)
        return batches * self.config.prompts_per_step * self.env.world_size / len(self.problems)

    # -- one batch -----------------------------------------------------------------------

    def _sync_to(self, step: int) -> float:
        """Push the policy unless the generator serves it already; seconds it took."""
        if self.sync.served_version == step:
            return 0.0
        started = time.perf_counter()
        self.sync.push(_LivePolicy(self), step)
        return time.perf_counter() - started

    def _batch_problems(self, batch_index: int) -> list[Problem]:
        """This rank's prompts of a batch: a slice of the endless stream of epochs."""
        per_rank = self.config.prompts_per_step
        n = len(self.problems)
        first = (batch_index * self.env.world_size + self.env.rank) * per_rank
        chosen = []
        for position in range(first, first + per_rank):
            epoch, index = divmod(position, n)
            order = self._order(epoch)
            chosen.append(self.problems[order[index]])
        return chosen

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {
                epoch: prompt_order(
                    len(self.problems), self.config.seed, epoch, self.config.shuffle_dataset
                )
            }
        return self._orders[epoch]

    def _rollouts(self, batch_index: int, step: int) -> tuple[list[Rollout], float]:
        config = self.config
        started = time.perf_counter()
        prompts = render_prompts(
            self._batch_problems(batch_index), self.template, self.tokenizer, config.instruction
        )
        rollouts = collect_rollouts(
            self.sync.generator,
            self.verifier,
            prompts,
            SamplingSettings(
                num_generations=config.num_generations,
                max_completion_length=config.max_completion_length,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=sampling_seed(config.seed, batch_index, self.env.rank),
            ),
            self.rewards,
            version_of=self.sync.version_of,
            policy_version=step,
            max_policy_lag=config.max_policy_lag,
            vocab_size=self.vocab_size,
        )
        return rollouts, time.perf_counter() - started

    def _step_batch(self, rollouts: Sequence[Rollout]) -> tuple[StepBatch, dict[str, float]]:
        """The trained rows with global loss weights, and the batch's statistics (all ranks)."""
        config = self.config
        batch = build_step_batch(
            rollouts,
            config.num_generations,
            scale_rewards=config.scale_rewards,
            mask_truncated_completions=config.mask_truncated_completions,
            pad_id=self.pad_token_id,
        )
        lengths = batch.loss_mask.sum(1)
        rewards = [r.reward for r in rollouts]
        local = [
            float((lengths > 0).sum()),
            float(lengths.sum()),
            float(len(rollouts)),
            sum(rewards),
            sum(r * r for r in rewards),
            float(sum(r.correct for r in rollouts)),
            float(sum(len(r.completion_ids) for r in rollouts)),
            float(sum(r.backtracks for r in rollouts)),
            float(sum(r.truncated for r in rollouts)),
            float(batch.skipped_groups),
        ]
        (sequences, tokens, n, reward_sum, reward_sq, correct, completion_tokens, backtracks,
         truncated, skipped) = all_reduce_sum(local, self.env.device)  # fmt: skip
        set_weights(
            batch,
            config.loss_type,
            config.max_completion_length,
            total_sequences=sequences,
            total_tokens=tokens,
        )
        assert batch.weights is not None
        # DeepSpeed averages gradients over ranks: times world_size gives the global loss.
        batch.weights = batch.weights * self.env.world_size
        if self.reference is not None and batch.num_rows:
            batch.ref_logprobs = self._logprobs_of(self.reference, batch)
        mean = reward_sum / n
        counts = {
            "reward_mean": mean,
            "reward_std": math.sqrt(max(reward_sq / n - mean * mean, 0.0) * n / max(n - 1, 1)),
            "accuracy": correct / n,
            "completion_length_mean": completion_tokens / n,
            "backtracks_mean": backtracks / n,
            "truncated_ratio": truncated / n,
            "skipped_groups": skipped,
            "trained_completions": sequences,
            "completion_tokens": completion_tokens,
        }
        return batch, counts

    @torch.no_grad()
    def _logprobs_of(self, model: torch.nn.Module, batch: StepBatch) -> torch.Tensor:
        size = self.config.per_device_train_batch_size
        parts = []
        for start in range(0, batch.num_rows, size):
            rows = batch.rows(start, start + size)
            width = batch.completion_ids.shape[1]
            logprobs = sequence_logprobs(model, rows).cpu()
            parts.append(torch.nn.functional.pad(logprobs, (0, width - logprobs.shape[1])))
        return torch.cat(parts)

    def _micro_batches(self, batch: StepBatch) -> list[StepBatch | None]:
        """gradient_accumulation_steps micro-batches (None: an empty one, run as a zero-loss
        pass so every rank steps DeepSpeed the same number of times). Rows of similar
        length share a micro-batch: less padding, and the loss weights make any split exact."""
        size = self.config.per_device_train_batch_size
        order = sorted(
            range(batch.num_rows),
            key=lambda i: int(batch.prompt_mask[i].sum() + batch.completion_mask[i].sum()),
        )
        sorted_batch = _select_rows(batch, order)
        chunks: list[StepBatch | None] = [
            sorted_batch.rows(start, start + size) for start in range(0, batch.num_rows, size)
        ]
        while len(chunks) < self.config.gradient_accumulation_steps:
            chunks.append(None)
        return chunks

    def _optimizer_step(self, batch: StepBatch) -> dict[str, float]:
        config = self.config
        self.engine.train()
        loss_sum = clipped = counted = kl_sum = ratio_sum = 0.0
        result = None
        for rows in self._micro_batches(batch):
            if rows is None:
                loss = self._empty_pass()
            else:
                parts = rows_loss(
                    self.engine.engine,
                    rows,
                    epsilon=config.epsilon,
                    epsilon_high=config.epsilon_high,
                    beta=config.beta,
                )
                loss = parts.loss
                clipped += parts.clipped_tokens
                counted += parts.counted_tokens
                kl_sum += parts.kl_sum
                ratio_sum += parts.ratio_sum
            self.engine.backward(loss)
            result = self.engine.step()
            loss_sum += float(loss.detach())
        assert result is not None, "the last micro-batch of a step must end the step"
        loss_sum, clipped, counted, kl_sum, ratio_sum = all_reduce_sum(
            [loss_sum, clipped, counted, kl_sum, ratio_sum], self.env.device
        )
        losses = {
            "loss": loss_sum / self.env.world_size,
            "clip_ratio": clipped / counted if counted else 0.0,
            # exp(logp_policy - logp_rollout) averaged: 1 on the first update of fresh rollouts
            # unless the generator and the trainer disagree (stale or wrongly synced weights)
            "ratio_mean": ratio_sum / counted if counted else 1.0,
            "grad_norm": result.grad_norm,
            "learning_rate": result.learning_rate,
        }
        if config.beta > 0:
            losses["kl"] = kl_sum / counted if counted else 0.0
        return losses

    def _empty_pass(self) -> torch.Tensor:
        ids = torch.full((1, 2), self.pad_token_id, device=self.env.device)
        out = self.engine.forward(input_ids=ids, use_cache=False)
        zero: torch.Tensor = out.logits.sum() * 0.0
        return zero


def _select_rows(batch: StepBatch, order: Sequence[int]) -> StepBatch:
    index = torch.tensor(list(order), dtype=torch.long)

    def pick(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor[index]

    return StepBatch(
        batch.prompt_ids[index],
        batch.prompt_mask[index],
        batch.completion_ids[index],
        batch.completion_mask[index],
        batch.loss_mask[index],
        batch.rollout_logprobs[index],
        batch.advantages[index],
        batch.skipped_groups,
        pick(batch.weights),
        pick(batch.ref_logprobs),
    )


def _window_mean(window: Sequence[dict[str, float]]) -> dict[str, float]:
    """Metrics of the steps since the last log line: means, except the latest values of
    counters and the learning rate."""
    latest = {"policy_version", "epoch", "learning_rate"}
    keys = list(dict.fromkeys(k for entry in window for k in entry))
    merged: dict[str, float] = {}
    for key in keys:
        values = [entry[key] for entry in window if key in entry]
        merged[key] = values[-1] if key in latest else sum(values) / len(values)
    return merged
