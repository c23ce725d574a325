"""Supervised fine-tuning on procedure-cloning traces, on DeepSpeed.

    result = train_sft(load_train_config(SFTConfig, "sft.yaml"), TrainingServices(store=...))

Each optimizer step trains on its planned sequences (see `data.py`). The loss is the mean
negative log-likelihood over every target token of the step on all ranks together, so a step
means the same whatever its split into ranks and micro-batches, and packed and padded batches
give the same numbers. Checkpoints, registration, resume and the log are shared machinery
(`checkpointing.py`, `train_log.py`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from astro_core.config import ConfigError
from astro_core.training.checkpointing import (
    Checkpointer,
    file_sha256,
    previous_starting_model,
)
from astro_core.training.data import (
    IGNORE_INDEX,
    BatchPlan,
    TokenizedTrace,
    collate,
    plan_epoch,
    read_chat_jsonl,
    steps_per_epoch,
    tokenize_dataset,
)
from astro_core.training.engine import (
    DistributedEnv,
    TrainEngine,
    all_reduce_sum,
    init_distributed,
    shutdown_distributed,
)
from astro_core.training.job import TrainingServices, TrainResult
from astro_core.training.models import prepare_model
from astro_core.training.sft_config import SFTConfig
from astro_core.training.train_log import TrainLogger

DATA_STATS_FILE = "data_stats.json"


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token negative log-likelihood and the number of target tokens
    (labels aligned with the inputs; position t predicts label t+1)."""
    targets = labels[:, 1:]
    count = int((targets != IGNORE_INDEX).sum())
    predictions = logits[:, :-1].float()
    total = F.cross_entropy(
        predictions.reshape(-1, predictions.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, count


def total_steps_for(config: SFTConfig, num_sequences: int, world_size: int) -> tuple[int, int]:
    """(optimizer steps of the run, steps per epoch)."""
    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
    per_epoch = steps_per_epoch(num_sequences, per_step * world_size)
    if config.max_steps > 0:
        return config.max_steps, per_epoch
    return max(1, math.ceil(config.num_train_epochs * per_epoch)), per_epoch


def train_sft(config: SFTConfig, services: TrainingServices) -> TrainResult:
    """Train (or resume, or find finished) the run in config.output_dir."""
    if not isinstance(config, SFTConfig):
        raise TypeError(f"train_sft needs an SFTConfig, got {type(config).__name__}")
    output = Path(config.output_dir)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output_dir {output} exists and is not a directory")
    conversations = read_chat_jsonl(config.dataset)  # bad data fails before any set-up
    env = init_distributed(config.deepspeed)
    try:
        return _SFTRun(config, services, env, conversations).run()
    finally:
        shutdown_distributed(env)


class _SFTRun:
    def __init__(
        self,
        config: SFTConfig,
        services: TrainingServices,
        env: DistributedEnv,
        conversations: list[list[dict[str, str]]],
    ) -> None:
        self.config = config
        self.env = env
        self.output_dir = Path(config.output_dir)
        if env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        model_ref = previous_starting_model(self.output_dir) or config.model
        self.starting, model, self.tokenizer = prepare_model(config, services.store, env, model_ref)
        self.traces, self.stats = tokenize_dataset(
            conversations,
            self.tokenizer,
            max_length=config.max_length,
            overlong=config.overlong,
            assistant_only_loss=config.assistant_only_loss,
        )
        self.lengths = [len(t.input_ids) for t in self.traces]
        self.total_steps, self.steps_per_epoch = total_steps_for(
            config, len(self.traces), env.world_size
        )
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
        self._plans: dict[int, BatchPlan] = {}
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        # A rank whose micro-batch is empty (the short last step) still runs a pass, so
        # collectives stay in step; its loss is multiplied by 0.
        self.filler = TokenizedTrace([self.pad_token_id] * 2, [IGNORE_INDEX] * 2)

    def plan(self, epoch: int) -> BatchPlan:
        if epoch not in self._plans:
            self._plans = {
                epoch: plan_epoch(
                    self.lengths,
                    seed=self.config.seed,
                    epoch=epoch,
                    micro_batch_size=self.config.per_device_train_batch_size,
                    accumulation=self.config.gradient_accumulation_steps,
                    world_size=self.env.world_size,
                    shuffle=self.config.shuffle_dataset,
                    group_by_length=self.config.group_by_length and not self.config.packing,
                )
            }
        return self._plans[epoch]

    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self.logger.close()
            self.engine.close()

    def _run(self) -> TrainResult:
        config, stats = self.config, self.stats
        state = self.checkpointer.resume()
        start = int(state["step"]) if state else 0
        stage_state: dict[str, Any] = dict(state.get("stage_state", {})) if state else {}
        metrics: dict[str, float] = dict(state.get("metrics", {})) if state else {}
        self.logger.resume_at(start)
        if self.env.is_main:
            (self.output_dir / DATA_STATS_FILE).write_text(json.dumps(stats.as_dict(), indent=1))
        self.logger.note(
            f"{stats.traces} traces: {stats.kept} kept, {stats.truncated} truncated and "
            f"{stats.dropped_overlong} dropped over max_length={config.max_length}, "
            f"{stats.dropped_no_targets} without loss tokens; {stats.tokens} tokens"
        )
        if start >= self.total_steps:
            where = "already finished"
        elif start:
            where = f"resuming after step {start}"
        else:
            where = f"from {self.starting.path}"
        self.logger.note(f"{self.total_steps} steps on {self.env.world_size} rank(s), {where}")
        if config.output_name and self.checkpointer.store is None:
            self.logger.note("output_name is set but no registry_address: nothing is registered")
        num_tokens = float(stage_state.get("num_tokens", 0.0))
        window = _Window()
        self.engine.train()
        for step in range(start, self.total_steps):
            step_loss, targets, tokens, grad_norm, learning_rate = self.train_step(step)
            num_tokens += tokens
            window.add(step_loss, targets, tokens)
            done = step + 1
            if done % config.logging_steps == 0 or done == self.total_steps:
                metrics = {
                    "loss": window.loss,
                    "learning_rate": learning_rate,
                    "grad_norm": grad_norm,
                    "epoch": done / self.steps_per_epoch,
                    "num_tokens": num_tokens,
                    "tokens_per_second": window.tokens_per_second,
                }
                self.logger.log(done, metrics)
                window = _Window()
            if config.save_steps and done % config.save_steps == 0 and done < self.total_steps:
                self._save(done, metrics, {"num_tokens": num_tokens})
        finished_before = bool(state and state.get("final"))
        if not finished_before:
            self._save(self.total_steps, metrics, {"num_tokens": num_tokens})
        return TrainResult(
            stage=config.stage,
            output_dir=self.output_dir,
            steps=self.total_steps,
            resumed_from=start,
            metrics=metrics,
            checkpoints=list(self.checkpointer.saved),
            registered=list(self.checkpointer.registered),
            summary=stats.as_dict(),
        )

    def _save(self, step: int, metrics: dict[str, float], stage_state: dict[str, Any]) -> None:
        directory = self.checkpointer.save(step, metrics, stage_state)
        info = self.checkpointer.registered[-1] if self.checkpointer.registered else None
        if info is not None and info.step != step:
            info = None
        self.logger.checkpoint(step, info, directory, metrics)

    def train_step(self, step: int) -> tuple[float, float, float, float, float]:
        """One optimizer step: (mean loss per target token, target tokens, tokens,
        grad norm, learning rate), counted over all ranks."""
        epoch, index = divmod(step, self.steps_per_epoch)
        mine = self.plan(epoch).for_rank(index, self.env.rank, self.env.world_size)
        batches = [[self.traces[i] for i in batch] for batch in mine]
        local_targets = sum(t.num_targets for batch in batches for t in batch)
        local_tokens = sum(len(t.input_ids) for batch in batches for t in batch)
        all_targets, all_tokens = all_reduce_sum(
            [float(local_targets), float(local_tokens)], self.env.device
        )
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.env.device)
        result = None
        for batch in batches:
            inputs = collate(
                batch or [self.filler], packing=self.config.packing, pad_token_id=self.pad_token_id
            )
            inputs = {k: v.to(self.env.device) for k, v in inputs.items()}
            labels = inputs.pop("labels")
            output = self.engine.forward(**inputs, use_cache=False)
            nll, _ = token_nll(output.logits, labels)
            # DeepSpeed averages gradients over ranks: times world_size gives the global mean.
            scale = self.env.world_size / all_targets if batch else 0.0
            self.engine.backward(nll * scale)
            result = self.engine.step()
            loss_sum += nll.detach()  # stays on the device: one sync per step, not per batch
        assert result is not None, "the last micro-batch of a step must end the step"
        (global_loss,) = all_reduce_sum([float(loss_sum)], self.env.device)
        return (
            global_loss / all_targets,
            all_targets,
            all_tokens,
            result.grad_norm,
            result.learning_rate,
        )


class _Window:
    """Mean loss per target token and tokens per second since the last log line."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.targets = 0.0
        self.tokens = 0.0
        self.loss_sum = 0.0

    def add(self, loss: float, targets: float, tokens: float) -> None:
        self.targets += targets
        self.tokens += tokens
        self.loss_sum += loss * targets

    @property
    def loss(self) -> float:
        return self.loss_sum / self.targets if self.targets else math.nan

    @property
    def tokens_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0
