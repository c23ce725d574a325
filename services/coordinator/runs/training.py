"""The training stages of a run: SFT and GRPO as trainer jobs, and the RL prompt selection.

A trainer job is the same `TrainJob` whether it runs as a local child process or as a
Kubernetes Job (services/jobs): its config is the run's sft/grpo section with the job fields
filled in by the run (model, dataset, output_dir, registry name, run id, service addresses,
Redis for progress). The output directory is the stage's own folder of the run, the same on
every attempt, so a job started again after a crash resumes from its last checkpoint. The
stage follows the job's status and its progress stream (`astro:run:<run id>:train`) and
records the checkpoints the job registered.

The direct arm trains under run id `<run id>-direct`, so its job and progress stream are its
own (`astro-sft-<run id>-direct`).
"""

from __future__ import annotations

from typing import Any

from astro_core.pipeline.sections import parse_section
from services.coordinator.runs.context import (
    DriverStopping,
    StageCancelled,
    StageContext,
    StageFailed,
    StageResult,
)
from services.coordinator.runs.stages import POLL_SECONDS, StageServices


def job_run_id(ctx: StageContext) -> str:
    return ctx.run_id if not ctx.stage.arm else f"{ctx.run_id}-{ctx.stage.arm}"


def checkpoint_name(ctx: StageContext) -> str:
    """The registry name of the stage's checkpoints: run-<run id>-<stage>."""
    return f"run-{ctx.run_id}-{ctx.stage.name}".replace("_", "-")


def trainer_config(ctx: StageContext, svc: StageServices, backend: str) -> dict[str, Any]:
    """The stage's trainer config: the section (over its preset) and the run's job fields.
    A Kubernetes Job gets Redis from its pod's environment (the URL may hold a password, and
    the config travels in the Job object), a local job from the config."""
    kind = ctx.stage.kind
    _, fields = parse_section(kind, ctx.spec.config.get(kind), svc.settings.default_preset)
    config = dict(fields)
    config.update(
        model=ctx.input_ref("model"),
        dataset=str(ctx.input_path("traces" if kind == "sft" else "prompts")),
        output_dir=str(ctx.stage_dir / "train"),
        output_name=checkpoint_name(ctx),
        run_id=job_run_id(ctx),
        registry_address=svc.settings.registry_address,
    )
    if backend == "local" and svc.redis_url:
        config["redis_url"] = svc.redis_url
    if kind == "grpo":
        config.update(
            generator_address=svc.settings.generator_address,
            verifier_address=svc.settings.verifier_address,
        )
    return config


def run_training(ctx: StageContext, svc: StageServices) -> StageResult:
    from services.jobs import JobHandle, TrainJob

    if svc.trainer is None:
        raise StageFailed("this coordinator has no trainer backend")
    backend = svc.trainer(ctx.spec.trainer_backend)
    handle = None
    earlier = ctx.handle.get("job")
    if earlier:  # a Kubernetes Job of an earlier attempt may still be running: follow it
        known = JobHandle.from_dict(earlier)
        if known.backend == backend.name:
            state = backend.status(known).state
            handle = known if state in ("pending", "running", "succeeded") else None
    if handle is None:
        config = trainer_config(ctx, svc, backend.name)
        job = TrainJob(stage=ctx.stage.kind, config=config, attempt=ctx.attempt - 1)
        try:
            handle = backend.start(job)
        except (ValueError, RuntimeError) as exc:
            raise StageFailed(f"cannot start the trainer: {exc}") from exc
        ctx.save_handle({"job": handle.to_dict()})
    follower = ProgressFollower(svc.redis_url, job_run_id(ctx), ctx.stage.kind)
    try:
        status = follow_job(ctx, backend, handle, follower)
    finally:
        follower.close()
    if status.state != "succeeded":
        reason = f"{status.reason}: " if status.reason else ""
        raise StageFailed(f"trainer job {handle.name} {status.state}: {reason}{status.message}")
    return training_result(ctx, svc, handle.name, follower.metrics)


def follow_job(ctx: StageContext, backend: Any, handle: Any, follower: ProgressFollower) -> Any:
    """Report the job's progress until it ends; a cancelled run cancels the job."""
    while True:
        try:
            ctx.check()
        except StageCancelled as exc:
            final = backend.cancel(handle)
            raise StageCancelled(f"trainer job {handle.name} {final.state}") from exc
        except DriverStopping:
            if backend.name == "local":  # a local job ends with the replica that started it
                backend.cancel(handle)
            raise
        follower.poll(ctx)
        status = backend.status(handle)
        if status.done:
            follower.poll(ctx)
            return status
        ctx.wake.wait(POLL_SECONDS)


class ProgressFollower:
    """Reads the trainer's TrainProgress stream into the run's stage progress."""

    def __init__(self, redis_url: str, run_id: str, stage: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url, decode_responses=True) if redis_url else None
        self.run_id = run_id
        self.stage = stage
        self.after = "-"
        self.metrics: dict[str, float] = {}

    def poll(self, ctx: StageContext) -> None:
        if self.client is None:
            return
        from services.trainer.progress import read_progress

        for entry_id, progress in read_progress(self.client, self.run_id, self.after):
            self.after = entry_id
            if progress.stage != self.stage:
                continue
            self.metrics.update({k: float(v) for k, v in progress.metrics.items()})
            ctx.report(int(progress.step), int(progress.total_steps), dict(progress.metrics))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def training_result(
    ctx: StageContext, svc: StageServices, job_name: str, metrics: dict[str, float]
) -> StageResult:
    """The checkpoints the job registered (newest last) and its log."""
    name = checkpoint_name(ctx)
    if svc.registry is None:
        raise StageFailed("this coordinator has no registry to find the checkpoints in")
    registered = sorted(svc.registry.list(name=name), key=lambda c: c.version)
    if not registered:
        raise StageFailed(f"the trainer registered no checkpoint under {name}")
    train_dir = ctx.stage_dir / "train"
    artifacts = {
        "checkpoint": registered[-1].ref,
        "checkpoints": ",".join(c.ref for c in registered),
        "output_dir": str(train_dir),
        "job": job_name,
    }
    log = train_dir / "train_log.jsonl"
    if log.is_file():
        artifacts["train_log"] = str(log)
    figures = {
        **metrics,
        "checkpoints": float(len(registered)),
        "steps": float(registered[-1].step),
    }
    return StageResult(artifacts, figures)


# ---- select_prompts ----------------------------------------------------------------------


def run_select_prompts(ctx: StageContext, svc: StageServices) -> StageResult:
    from astro_core.training.select_prompts import SelectPromptsConfig, run_select_prompts

    _, fields = parse_section("select_prompts", ctx.spec.config.get("select_prompts"))
    output = ctx.stage_dir / "prompts.jsonl"
    record = ctx.stage_dir / "pass_rates.jsonl"
    model = ctx.input_ref("model")
    config = SelectPromptsConfig.model_validate(
        {
            **fields,
            "dataset": str(ctx.input_path("prompts")),
            "output": str(output),
            "record": str(record),
            "model": model,
        }
    )
    if svc.verifier is None:
        raise StageFailed("this coordinator has no verifier (settings.worker is off)")
    generator, _template = svc.policy(ctx, model)

    def progress(done: int, total: int) -> None:
        ctx.report(done, total)
        ctx.check()  # a cancel stops between generator calls

    try:
        summary = run_select_prompts(
            config,
            generator=generator,
            verifier=svc.verifier,
            store=svc.registry,
            progress=progress,
        )
    except (ValueError, LookupError, RuntimeError) as exc:
        raise StageFailed(str(exc)) from exc
    metrics = {
        "prompts": float(summary.total),
        "kept": float(summary.kept),
        "too_easy": float(summary.too_easy),
        "too_hard": float(summary.too_hard),
    }
    if not summary.kept:
        raise StageFailed(
            f"no prompt has a pass rate in ({config.pass_rate_low}, {config.pass_rate_high}): "
            f"{summary.too_easy} too easy, {summary.too_hard} too hard of {summary.total}"
        )
    return StageResult({"prompts": str(output), "pass_rates": str(record)}, metrics)
