"""The DeepSpeed engine, set up once for every algorithm.

    env = init_distributed(config.deepspeed)          # before loading the model
    engine = TrainEngine(model, config, env, total_steps)
    for micro_batch in step_batches:                  # gradient_accumulation_steps of them
        loss = ...                                    # normalised by the caller (see backward)
        engine.backward(loss)
        stats = engine.step()                         # StepStats at the step's last micro-batch
    engine.save_state(dir) / engine.load_state(dir)   # optimizer, scheduler, weights (resume)
    shutdown_distributed(env)

Ranks come from the launcher's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
(torchrun, the deepspeed launcher, Kubernetes Indexed Jobs and PyTorchJob set them); a process
started without a launcher is rank 0 of 1. On CPU the backend is gloo and the optimizer torch's
AdamW, so DeepSpeed compiles nothing (its FusedAdam / CPUAdam / shared-memory ops take 25-250 s
to JIT-build); on CUDA it is NCCL and AdamW(fused=True), in bf16 unless the config says not.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch

from astro_core.models.accelerator import select_deepspeed_accelerator
from astro_core.training.config import DeepSpeedSettings, TrainerConfig

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    # Launcher variables this process set itself (no launcher): removed again at shutdown.
    own_variables: tuple[str, ...] = ()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step did."""

    grad_norm: float  # global gradient norm before clipping (nan when unknown)
    learning_rate: float  # the rate this step used


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _int_variable(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def import_deepspeed() -> Any:
    """Import DeepSpeed configured for this machine, without JIT-compiling anything on CPU."""
    select_deepspeed_accelerator()
    import deepspeed
    import deepspeed.ops

    if not torch.cuda.is_available():
        # DeepSpeed's CPU comm backend builds a shared-memory all-reduce op when it starts
        # (a C++ JIT build, minutes); gloo does the job without it. An op marked incompatible
        # is skipped, and setting the table first also avoids probing every op's compiler.
        table = deepspeed.ops.__dict__.setdefault("__compatible_ops__", {})
        table["deepspeed_shm_comm"] = False
    return deepspeed


def init_distributed(settings: DeepSpeedSettings) -> DistributedEnv:
    """Join the process group the launcher describes, or form a group of one."""
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing and len(missing) < len(LAUNCHER_VARIABLES) and "WORLD_SIZE" not in missing:
        if _int_variable("WORLD_SIZE") > 1:
            raise ValueError(
                f"launcher variables {', '.join(missing)} are missing: a multi-process job "
                "needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
            )
    own: list[str] = []
    defaults = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")),
        "MASTER_ADDR": "127.0.0.1",
    }
    for name in missing:
        os.environ[name] = defaults[name] if name in defaults else str(_free_port())
        own.append(name)
    rank, world_size = _int_variable("RANK"), _int_variable("WORLD_SIZE")
    local_rank = _int_variable("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    cuda = torch.cuda.is_available()
    backend = settings.backend if settings.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ValueError("deepspeed.backend nccl needs CUDA; use gloo (or auto) on CPU")
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    deepspeed = import_deepspeed()
    if world_size == 1:
        # A group of one needs no rendezvous: an in-memory store instead of a TCP port, which
        # another process could take between choosing it and listening on it (also when a
        # launcher or an earlier job left MASTER_PORT set).
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(
                backend,
                store=dist.HashStore(),
                rank=0,
                world_size=1,
                timeout=timedelta(seconds=settings.timeout_seconds),
            )
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints its set-up to stdout
        deepspeed.init_distributed(
            dist_backend=backend,
            auto_mpi_discovery=False,
            timeout=timedelta(seconds=settings.timeout_seconds),
        )
    return DistributedEnv(rank, world_size, local_rank, device, backend, tuple(own))


def shutdown_distributed(env: DistributedEnv) -> None:
    """Leave the process group (a gloo job can abort at exit otherwise) and forget the
    launcher variables this process invented, so a later job in it starts clean."""
    import torch.distributed as dist

    if dist.is_initialized():
        # Through DeepSpeed, which also drops the groups it cached (a later job in this
        # process would otherwise reach for groups of the destroyed world).
        import_deepspeed().comm.destroy_process_group()
    for name in env.own_variables:
        os.environ.pop(name, None)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over every rank (float64: token counts stay exact)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def uses_bf16(config: TrainerConfig) -> bool:
    """bf16 as configured; by default on with CUDA and off on CPU."""
    if config.bf16 is None:
        return torch.cuda.is_available()
    if config.bf16 and not torch.cuda.is_available():
        return False  # CPU training is fp32: bf16 matmuls there are slow and inexact
    return config.bf16


def deepspeed_config(config: TrainerConfig, world_size: int, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config a TrainerConfig stands for (the optimizer is passed separately)."""
    micro = config.per_device_train_batch_size
    accumulation = config.gradient_accumulation_steps
    zero: dict[str, Any] = {"stage": config.deepspeed.zero_stage}
    if config.deepspeed.zero_stage == 3:
        # Gather whole parameters for saving (HF checkpoints) and for policy sync.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world_size,
        "gradient_clipping": config.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 2**62,  # we log; DeepSpeed stays quiet
        "wall_clock_breakdown": False,
        # Our client optimizer (torch AdamW) is wanted with offload too: no JIT-built ops.
        "zero_force_ds_cpu_optimizer": False,
    }
    return _merge(ds, config.deepspeed.extra)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def schedule_factor(
    step: int, *, kind: str, warmup_steps: int, total_steps: int, min_factor: float = 0.0
) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warmup from 0, then
    cosine or linear decay to min_factor at total_steps, or constant."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if kind == "linear":
        return min_factor + (1.0 - min_factor) * (1.0 - progress)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(config: TrainerConfig, total_steps: int) -> int:
    return math.ceil(config.warmup_ratio * total_steps)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    factor = partial(
        schedule_factor,
        kind=config.lr_scheduler_type,
        warmup_steps=warmup_steps(config, total_steps),
        total_steps=total_steps,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        fused=torch.cuda.is_available(),
    )


class TrainEngine:
    """A DeepSpeed engine around `model` with our optimizer, schedule and step bookkeeping.

    Losses are not rescaled here: the caller passes a loss already normalised for the whole
    optimizer step (e.g. token sum / tokens in the step on all ranks, times world_size
    because DeepSpeed averages gradients over ranks).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainerConfig,
        env: DistributedEnv,
        total_steps: int,
    ) -> None:
        deepspeed = import_deepspeed()
        self.config = config
        self.env = env
        self.total_steps = total_steps
        self.bf16 = uses_bf16(config)
        ds_config = deepspeed_config(config, env.world_size, self.bf16)
        # Stage 0 in fp32 clips through DeepSpeed without reporting the norm: clip here.
        self._clip_here = config.deepspeed.zero_stage == 0 and not self.bf16
        if self._clip_here:
            ds_config["gradient_clipping"] = 0.0
        if config.deepspeed.zero_stage != 3:
            # The optimizer is built on the parameters where they will live. (Under ZeRO-3
            # the partitions were placed when the model was loaded.)
            model.to(env.device)
        optimizer = make_optimizer(model, config)
        scheduler: Callable[[torch.optim.Optimizer], Any] = partial(
            make_scheduler, config=config, total_steps=total_steps
        )
        with contextlib.redirect_stdout(sys.stderr):
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model,
                optimizer=optimizer,
                lr_scheduler=scheduler,
                config=ds_config,
                dist_init_required=False,
            )

    @property
    def module(self) -> torch.nn.Module:
        """The model being trained (under ZeRO-3 its parameters are partitioned)."""
        module: torch.nn.Module = self.engine.module
        return module

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    @property
    def zero_stage(self) -> int:
        return self.config.deepspeed.zero_stage

    def train(self) -> None:
        self.engine.train()

    def forward(self, **inputs: Any) -> Any:
        return self.engine(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> StepStats | None:
        """Advance one micro-batch; at the last of the step, update and return the stats."""
        boundary = bool(self.engine.is_gradient_accumulation_boundary())
        learning_rate = self.learning_rate
        norm = math.nan
        if boundary and self._clip_here:
            params = [p for p in self.module.parameters() if p.grad is not None]
            max_norm = self.config.max_grad_norm or math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.engine.step()
        if not boundary:
            return None
        if not self._clip_here:
            reported = self.engine.get_global_grad_norm()
            norm = float(reported) if reported is not None else math.nan
        return StepStats(grad_norm=norm, learning_rate=learning_rate)

    @contextlib.contextmanager
    def gathered_parameters(self) -> Iterator[None]:
        """Whole parameters inside the block (ZeRO-3 gathers them; a no-op otherwise)."""
        if self.zero_stage != 3:
            yield
            return
        deepspeed = import_deepspeed()
        with deepspeed.zero.GatheredParameters(list(self.module.parameters())):
            yield

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, whole, on CPU: on the main rank (empty elsewhere). Call on all ranks:
        under ZeRO-3 it gathers the partitions."""
        if self.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
            return dict(state) if state is not None else {}
        if not self.env.is_main:
            return {}
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def save_state(self, directory: str | Path, tag: str) -> None:
        """Optimizer, scheduler and weights for resuming (collective: every rank calls it)."""
        with contextlib.redirect_stdout(sys.stderr):
            self.engine.save_checkpoint(str(directory), tag=tag, save_latest=False)

    def load_state(self, directory: str | Path, tag: str) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            path, _ = self.engine.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state {tag} under {directory}")

    def close(self) -> None:
        self.engine.destroy()
