"""Checkpoints of a training run: HF model files, DeepSpeed state, registration, resume.

    output_dir/
      train_log.jsonl
      checkpoint-<step>/
        model/               Hugging Face files: config, safetensors, tokenizer + chat
                             template, generation config, training_info.json (what made it)
        state/               DeepSpeed optimizer/scheduler/weights + rng-<rank>.pt (resume)
        trainer_state.json   written last: the checkpoint is complete once it exists

A checkpoint is saved every `save_steps` and at the end (the final one has no `state/`:
nothing resumes from it). `model/` is registered with the CheckpointStore (stage, step,
metrics, parent version, aliases); a run that died between saving and registering registers
on restart. `Checkpointer.resume()` restores the newest complete checkpoint: weights,
optimizer, scheduler, every rank's RNG state and the stage's own state (e.g. the data
position), so the run continues the same trajectory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from astro_core.checkpoints import CheckpointInfo, CheckpointStore
from astro_core.training.config import TrainerConfig
from astro_core.training.engine import TrainEngine, barrier
from astro_core.training.models import StartingModel, base_model, merged_state_dict

CHECKPOINT_PREFIX = "checkpoint-"
MODEL_DIR = "model"
STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
TRAINING_INFO = "training_info.json"
DEEPSPEED_TAG = "deepspeed"
# Fields that do not change what is computed: a resumed run may change them.
PLUMBING_FIELDS = frozenset(
    {
        "output_name",
        "output_aliases",
        "run_id",
        "registry_address",
        "generator_address",
        "verifier_address",
        "redis_url",
        "save_steps",
        "save_total_limit",
        "logging_steps",
    }
)


class ResumeError(ValueError):
    """The output directory holds a run that this config cannot continue."""


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint, oldest first."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        step = path.name[len(CHECKPOINT_PREFIX) :]
        if step.isdigit() and (path / TRAINER_STATE).is_file():
            found.append((int(step), path))
    return sorted(found)


def read_trainer_state(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / TRAINER_STATE).read_text())
    return data


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def trajectory_fields(config: TrainerConfig) -> dict[str, Any]:
    """The config fields that decide what a run computes (compared on resume)."""
    dumped: dict[str, Any] = config.model_dump(mode="json")
    return {k: v for k, v in dumped.items() if k not in PLUMBING_FIELDS}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_hf_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    state: dict[str, torch.Tensor],
    directory: Path,
    info: Mapping[str, Any],
    config: TrainerConfig,
) -> None:
    """Write a plain Hugging Face model directory (LoRA merged) atomically."""
    staged = directory.with_name(f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}")
    try:
        plain = merged_state_dict(state, config.lora)
        base_model(model).save_pretrained(staged, state_dict=plain, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        (staged / TRAINING_INFO).write_text(json.dumps(dict(info), indent=1) + "\n")
        os.replace(staged, directory)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@dataclass
class Checkpointer:
    """Saves, registers and restores the checkpoints of one run (every rank holds one)."""

    config: TrainerConfig
    engine: TrainEngine
    tokenizer: PreTrainedTokenizerBase
    starting: StartingModel
    total_steps: int
    store: CheckpointStore | None = None
    data_fingerprint: str = ""  # e.g. the dataset's sha256: a resume must see the same data
    saved: list[Path] = field(default_factory=list)
    registered: list[CheckpointInfo] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def is_main(self) -> bool:
        return self.engine.env.is_main

    # -- saving -----------------------------------------------------------------------------

    def save(self, step: int, metrics: Mapping[str, float], stage_state: Mapping[str, Any]) -> Path:
        """Save checkpoint `step` (collective: every rank calls it); returns its directory."""
        directory = checkpoint_dir(self.output_dir, step)
        final = step >= self.total_steps
        if self.is_main:
            shutil.rmtree(directory, ignore_errors=True)  # a half-written one of a dead run
            directory.mkdir(parents=True)
        barrier()
        weights = self.engine.full_state_dict()  # collective under ZeRO-3
        if not final:
            self.engine.save_state(directory / STATE_DIR, DEEPSPEED_TAG)
            rank = self.engine.env.rank
            (directory / STATE_DIR).mkdir(parents=True, exist_ok=True)
            torch.save(rng_state(), directory / STATE_DIR / f"rng-{rank}.pt")
        if self.is_main:
            save_hf_model(
                self.engine.module,
                self.tokenizer,
                weights,
                directory / MODEL_DIR,
                self._training_info(step, metrics),
                self.config,
            )
        del weights
        barrier()
        if self.is_main:
            write_json_atomic(
                directory / TRAINER_STATE,
                {
                    "step": step,
                    "total_steps": self.total_steps,
                    "world_size": self.engine.env.world_size,
                    "final": final,
                    "metrics": dict(metrics),
                    "stage_state": dict(stage_state),
                    "starting_model": self.starting.ref or str(self.starting.path),
                    "data_fingerprint": self.data_fingerprint,
                    "config": trajectory_fields(self.config),
                },
            )
            self.register(directory)
            self._prune()
        self.saved.append(directory)
        return directory

    def _training_info(self, step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        return {
            "stage": self.config.stage,
            "step": step,
            "total_steps": self.total_steps,
            "run_id": self.config.run_id,
            "base_model": self.starting.ref or str(self.starting.path),
            "metrics": dict(metrics),
            "config": self.config.model_dump(mode="json"),
        }

    def register(self, directory: Path) -> CheckpointInfo | None:
        """Register directory/model unless already done or there is nowhere to register."""
        if self.store is None or not self.config.output_name:
            return None
        state = read_trainer_state(directory)
        if state.get("registered"):
            return None
        info = self.store.register(
            self.config.output_name,
            directory / MODEL_DIR,
            stage=self.config.stage,
            parent_version=self.starting.version,
            step=int(state["step"]),
            metrics={k: float(v) for k, v in state.get("metrics", {}).items()},
            aliases=self.config.output_aliases,
        )
        state["registered"] = info.ref
        write_json_atomic(directory / TRAINER_STATE, state)
        self.registered.append(info)
        return info

    def _prune(self) -> None:
        limit = self.config.save_total_limit
        if limit is None:
            return
        for _, old in complete_checkpoints(self.output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    # -- resuming ---------------------------------------------------------------------------

    def latest(self) -> tuple[int, Path] | None:
        done = complete_checkpoints(self.output_dir)
        return done[-1] if done else None

    def resume(self) -> dict[str, Any] | None:
        """Restore the newest complete checkpoint on every rank; its trainer state, or None
        for a fresh start. A finished run's final checkpoint restores nothing (no state)."""
        latest = self.latest()
        if latest is None:
            return None
        step, directory = latest
        state = read_trainer_state(directory)
        self._check_compatible(state, directory)
        if self.is_main and not state.get("registered"):
            self.register(directory)  # the previous process died before registering
        if state.get("final"):
            return state
        state_dir = directory / STATE_DIR
        self.engine.load_state(state_dir, DEEPSPEED_TAG)
        rng_file = state_dir / f"rng-{self.engine.env.rank}.pt"
        set_rng_state(torch.load(rng_file, weights_only=False))
        return state

    def _check_compatible(self, state: Mapping[str, Any], directory: Path) -> None:
        where = f"{self.output_dir} holds a run (at {directory.name})"
        if int(state.get("world_size", 1)) != self.engine.env.world_size:
            raise ResumeError(
                f"{where} written by {state.get('world_size')} ranks; resume it with the "
                f"same number, not {self.engine.env.world_size}, or use a new output_dir"
            )
        if int(state.get("total_steps", -1)) != self.total_steps:
            raise ResumeError(
                f"{where} of {state.get('total_steps')} steps, this config gives "
                f"{self.total_steps}; use a new output_dir"
            )
        saved, current = state.get("config", {}), trajectory_fields(self.config)
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise ResumeError(
                f"{where} with a different config ({', '.join(changed)} changed); "
                "use a new output_dir or the same config"
            )
        if self.data_fingerprint and state.get("data_fingerprint") != self.data_fingerprint:
            raise ResumeError(f"{where} trained on different data; use a new output_dir")


def previous_starting_model(output_dir: str | Path) -> str | None:
    """The model a run in output_dir started from (a resumed run keeps it even if an alias
    has moved since), or None when there is no checkpoint yet."""
    done = complete_checkpoints(output_dir)
    if not done:
        return None
    ref = read_trainer_state(done[-1][1]).get("starting_model")
    return str(ref) if ref else None
