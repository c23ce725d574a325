"""`astro train sft|grpo|select-prompts`: run a training stage in this process.

    astro train sft --config sft.yaml [--preset cpu] [--learning-rate 1e-5] [--set lora.r=8]
    torchrun --nproc-per-node 2 -m astro_cli.main train sft --config sft.yaml   # 2 ranks

The config is a stage config (SFTConfig / GRPOConfig) in YAML; a preset (class defaults are
the paper's values) comes first, the file over it, then flags, then `--set FIELD=VALUE`
(dotted for nested fields, values in YAML). A Kubernetes trainer Job runs exactly
`astro train <stage> --config /etc/astro/train/config.yaml`. Progress goes to stderr; stdout
gets one summary line. A bad config exits 2; bad data, models or services exit 1.

The helpers below (`load_stage_config`, `run_stage_command` and the option types) are for
every stage's command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    from astro_core.training.config import TrainerConfig

train = typer.Typer(
    help="Train models: SFT on cloned traces, GRPO with verifiable rewards.",
    no_args_is_help=True,
)


def _help(field: str) -> str:
    from astro_core.training.sft_config import SFTConfig

    return SFTConfig.model_fields[field].description or field


ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="Stage config YAML (presets: astro_core/training/presets/)."),
]
Preset = Annotated[
    str | None, typer.Option(help="Preset applied before the file, e.g. cpu or paper.")
]
SetItems = Annotated[
    list[str] | None,
    typer.Option("--set", help="FIELD=VALUE over everything else, e.g. deepspeed.zero_stage=2."),
]
PrintConfig = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")
]
Model = Annotated[str | None, typer.Option(help=_help("model"))]
Dataset = Annotated[str | None, typer.Option(help=_help("dataset"))]
OutputDir = Annotated[str | None, typer.Option(help=_help("output_dir"))]
OutputName = Annotated[str | None, typer.Option(help=_help("output_name"))]
RunId = Annotated[str | None, typer.Option(help=_help("run_id"))]
Registry = Annotated[str | None, typer.Option("--registry", help=_help("registry_address"))]
LearningRate = Annotated[float | None, typer.Option(help=_help("learning_rate"))]
Epochs = Annotated[float | None, typer.Option(help=_help("num_train_epochs"))]
MaxSteps = Annotated[int | None, typer.Option(help=_help("max_steps"))]
BatchSize = Annotated[int | None, typer.Option(help=_help("per_device_train_batch_size"))]
Accumulation = Annotated[int | None, typer.Option(help=_help("gradient_accumulation_steps"))]
SaveSteps = Annotated[int | None, typer.Option(help=_help("save_steps"))]
Seed = Annotated[int | None, typer.Option(help=_help("seed"))]
ZeroStage = Annotated[
    int | None, typer.Option(help="ZeRO stage 0-3 (deepspeed.zero_stage).", show_default=False)
]


def job_overrides(**values: Any) -> dict[str, Any]:
    """Flag values that were given, as config overrides (`zero_stage` goes under deepspeed)."""
    overrides = {k: v for k, v in values.items() if v is not None and k != "zero_stage"}
    if values.get("zero_stage") is not None:
        overrides["deepspeed"] = {"zero_stage": values["zero_stage"]}
    return overrides


def load_stage_config(
    stage: str,
    config_file: Path | None,
    preset: str | None,
    overrides: dict[str, Any],
    set_items: list[str] | None,
) -> TrainerConfig:
    """preset < file < flags < --set, validated; a bad config ends the command (exit 2)."""
    from astro_core.config import ConfigError, deep_merge
    from astro_core.training.config import load_train_config, parse_set_options
    from astro_core.training.job import config_class

    if config_file is not None and not config_file.is_file():
        fail(f"--config: file not found: {config_file}")
    try:
        merged = deep_merge(overrides, parse_set_options(set_items or []))
        return load_train_config(config_class(stage), config_file, preset=preset, overrides=merged)
    except ConfigError as exc:
        fail(str(exc))


def run_stage_command(config: TrainerConfig, print_config: bool = False) -> None:
    """Train, turning expected failures into one line on stderr (exit 1)."""
    import grpc

    from astro_core.checkpoints import CheckpointError
    from astro_core.config import ConfigError
    from astro_core.training.checkpointing import ResumeError
    from astro_core.training.config import config_to_yaml
    from astro_core.training.data import DatasetError
    from astro_core.training.models import ModelLoadError
    from astro_core.training.policy_sync import SyncTimeout
    from astro_core.training.rollouts import RolloutError
    from services.trainer.process import run_training

    if print_config:
        typer.echo(config_to_yaml(config), nl=False)
        return
    try:
        result = run_training(config)
    except ConfigError as exc:
        fail(str(exc))
    except (DatasetError, ModelLoadError, ResumeError, CheckpointError) as exc:
        fail(str(exc), code=1)
    except (RolloutError, SyncTimeout) as exc:  # GRPO: the generator or the sync failed
        fail(str(exc), code=1)
    except grpc.RpcError as exc:
        fail(f"{exc.code().name}: {exc.details()}", code=1)
    except KeyboardInterrupt:
        fail("interrupted; restart with the same output_dir to resume", code=130)
    if os.environ.get("RANK", "0") != "0":
        return  # one summary per job, from its main rank
    resumed = f" (resumed after step {result.resumed_from})" if result.resumed_from else ""
    loss = result.metrics.get("loss")
    last = result.checkpoints[-1] if result.checkpoints else None
    parts = [f"{config.stage} finished: {result.steps} steps{resumed}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if last is not None:
        parts.append(f"checkpoint {last}")
    if result.registered:
        parts.append(f"registered {result.registered[-1].ref}")
    typer.echo("; ".join(parts))


@train.command("sft")
def sft_command(
    config: ConfigFile = None,
    preset: Preset = None,
    model: Model = None,
    dataset: Dataset = None,
    output_dir: OutputDir = None,
    output_name: OutputName = None,
    run_id: RunId = None,
    registry: Registry = None,
    learning_rate: LearningRate = None,
    num_train_epochs: Epochs = None,
    max_steps: MaxSteps = None,
    per_device_train_batch_size: BatchSize = None,
    gradient_accumulation_steps: Accumulation = None,
    max_length: Annotated[int | None, typer.Option(help=_help("max_length"))] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing")] = None,
    assistant_only_loss: Annotated[
        bool | None,
        typer.Option("--assistant-only-loss/--all-tokens-loss", help=_help("assistant_only_loss")),
    ] = None,
    zero_stage: ZeroStage = None,
    save_steps: SaveSteps = None,
    seed: Seed = None,
    set_items: SetItems = None,
    print_config: PrintConfig = False,
) -> None:
    """Supervised fine-tuning on a traces JSONL (what `astro clone` writes)."""
    overrides = job_overrides(
        model=model,
        dataset=dataset,
        output_dir=output_dir,
        output_name=output_name,
        run_id=run_id,
        registry_address=registry,
        learning_rate=learning_rate,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_length=max_length,
        packing=packing,
        assistant_only_loss=assistant_only_loss,
        zero_stage=zero_stage,
        save_steps=save_steps,
        seed=seed,
    )
    settings = load_stage_config("sft", config, preset, overrides, set_items)
    run_stage_command(settings, print_config)


def _grpo_help(field: str) -> str:
    from astro_core.training.grpo_config import GRPOConfig

    return GRPOConfig.model_fields[field].description or field


@train.command("grpo")
def grpo_command(
    config: ConfigFile = None,
    preset: Preset = None,
    model: Model = None,
    dataset: Annotated[
        str | None, typer.Option(help="Prompts JSONL (problem, answer), e.g. select-prompts'.")
    ] = None,
    output_dir: OutputDir = None,
    output_name: OutputName = None,
    run_id: RunId = None,
    registry: Registry = None,
    generator: Annotated[
        str | None, typer.Option("--generator", help=_grpo_help("generator_address"))
    ] = None,
    verifier: Annotated[
        str | None, typer.Option("--verifier", help=_grpo_help("verifier_address"))
    ] = None,
    policy_sync: Annotated[str | None, typer.Option(help=_grpo_help("policy_sync"))] = None,
    num_generations: Annotated[int | None, typer.Option(help=_grpo_help("num_generations"))] = None,
    max_completion_length: Annotated[
        int | None, typer.Option(help=_grpo_help("max_completion_length"))
    ] = None,
    learning_rate: LearningRate = None,
    max_steps: MaxSteps = None,
    per_device_train_batch_size: BatchSize = None,
    gradient_accumulation_steps: Accumulation = None,
    zero_stage: ZeroStage = None,
    save_steps: SaveSteps = None,
    seed: Seed = None,
    set_items: SetItems = None,
    print_config: PrintConfig = False,
) -> None:
    """GRPO with verifiable rewards on a prompts JSONL (+1/-1 rewards, groups of G)."""
    overrides = job_overrides(
        model=model,
        dataset=dataset,
        output_dir=output_dir,
        output_name=output_name,
        run_id=run_id,
        registry_address=registry,
        generator_address=generator,
        verifier_address=verifier,
        policy_sync=policy_sync,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        learning_rate=learning_rate,
        max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        zero_stage=zero_stage,
        save_steps=save_steps,
        seed=seed,
    )
    settings = load_stage_config("grpo", config, preset, overrides, set_items)
    run_stage_command(settings, print_config)


def _select_help(field: str) -> str:
    from astro_core.training.select_prompts import SelectPromptsConfig

    return SelectPromptsConfig.model_fields[field].description or field


@train.command("select-prompts")
def select_prompts_command(
    config: ConfigFile = None,
    model: Annotated[str | None, typer.Option(help=_select_help("model"))] = None,
    dataset: Annotated[str | None, typer.Option(help=_select_help("dataset"))] = None,
    output: Annotated[str | None, typer.Option(help=_select_help("output"))] = None,
    generator: Annotated[
        str | None, typer.Option("--generator", help=_select_help("generator_address"))
    ] = None,
    verifier: Annotated[
        str | None, typer.Option("--verifier", help=_select_help("verifier_address"))
    ] = None,
    registry: Annotated[
        str | None, typer.Option("--registry", help=_select_help("registry_address"))
    ] = None,
    num_samples: Annotated[int | None, typer.Option(help=_select_help("num_samples"))] = None,
    pass_rate_low: Annotated[
        float | None, typer.Option("--low", help=_select_help("pass_rate_low"))
    ] = None,
    pass_rate_high: Annotated[
        float | None, typer.Option("--high", help=_select_help("pass_rate_high"))
    ] = None,
    max_completion_length: Annotated[
        int | None, typer.Option(help=_select_help("max_completion_length"))
    ] = None,
    set_items: SetItems = None,
) -> None:
    """Keep the prompts a policy solves sometimes; write them with their pass rates.

    Each prompt is sampled n times with the starting policy; it is kept when its pass rate
    lies in the open interval (--low, --high)."""
    from contextlib import ExitStack

    import grpc

    from astro_core.config import ConfigError, deep_merge, load_config
    from astro_core.training.config import parse_set_options
    from astro_core.training.data import DatasetError
    from astro_core.training.models import ModelLoadError
    from astro_core.training.rollouts import RolloutError
    from astro_core.training.select_prompts import SelectPromptsConfig, run_select_prompts

    if config is not None and not config.is_file():
        fail(f"--config: file not found: {config}")
    overrides = job_overrides(
        model=model,
        dataset=dataset,
        output=output,
        generator_address=generator,
        verifier_address=verifier,
        registry_address=registry,
        num_samples=num_samples,
        pass_rate_low=pass_rate_low,
        pass_rate_high=pass_rate_high,
        max_completion_length=max_completion_length,
    )
    try:
        merged = deep_merge(overrides, parse_set_options(set_items or []))
        settings = load_config(SelectPromptsConfig, config, overrides=merged, env_prefix=None)
    except ConfigError as exc:
        fail(str(exc))
    try:
        with ExitStack() as stack:
            summary = run_select_prompts(settings, **_select_services(settings, stack))
    except (DatasetError, ModelLoadError, RolloutError, ValueError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else repr(exc), code=1)
    except grpc.RpcError as exc:
        fail(f"{exc.code().name}: {exc.details()}", code=1)
    typer.echo(
        f"kept {summary.kept} of {summary.total} prompts with pass rate in "
        f"({settings.pass_rate_low:g}, {settings.pass_rate_high:g}): {summary.too_easy} too "
        f"easy, {summary.too_hard} too hard; wrote {settings.output}"
    )


def _select_services(settings: Any, stack: Any) -> dict[str, Any]:
    """Clients for the addresses the selection config names (closed with `stack`)."""
    from services.trainer.process import open_store

    services: dict[str, Any] = {"store": open_store(settings.registry_address, stack)}
    if settings.generator_address:
        from services.generator.client import GeneratorClient

        services["generator"] = stack.enter_context(GeneratorClient(settings.generator_address))
    if settings.verifier_address:
        from services.runtime.config import client_config_from_env
        from services.verifier.client import VerifierClient

        config = client_config_from_env(settings.verifier_address)
        services["verifier"] = stack.enter_context(VerifierClient(config))
    return services


def register(app: typer.Typer) -> None:
    app.add_typer(train, name="train")
