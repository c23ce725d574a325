"""`astro demo` (what `make demo` runs): a small model learns to search, on one machine.

1. Warm-start: the `product` family's tiny Llama is SFT-ed on noisy one-guess solutions of
   train problems (astro_core.models.warm_start), so it answers in the family's step format,
   sometimes wrongly; its greedy and sampled accuracy on the held-out problems is printed.
2. The local platform starts on loopback (services.launcher.LocalPlatform: coordinator,
   generator, verifier, registry, an embedded Redis unless REDIS_URL is set) and the warm model
   is registered as the run's base model.
3. One run through the Runs gRPC service: search the train problems -> clone ASTRO traces ->
   SFT -> select RL prompts -> GRPO -> evaluate base, SFT and RL on held-out problems -> report.
   It is followed like `astro run` (one bar per stage, each stage's headline figures).
4. A summary (accuracy and backtracks per answer of each checkpoint), the report's path and
   the wall time.

Everything is a file under --data-dir. Ctrl-C, or any error, stops every service and child.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    from astro_core.pipeline.demo_recipe import DemoPreset
    from services.launcher import LocalPlatform

BASE_MODEL_NAME = "demo-warm-start"


def _say(text: str) -> None:
    typer.echo(text)


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where everything goes (default: a fresh temporary folder)."),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="demo: the full recipe (minutes); tiny: seconds per stage (tests)."),
    ] = "demo",
) -> None:
    """Warm-start a small model, then run search -> clone -> SFT -> GRPO -> eval -> report
    through the local platform's Runs service, and print what the model learned."""
    from astro_core.pipeline.demo_recipe import DEMO_PRESETS

    if preset not in DEMO_PRESETS:  # before anything starts or is written
        fail(f"--preset: unknown preset {preset!r}; choose from {', '.join(DEMO_PRESETS)}")
    if data_dir is not None:
        data_dir = data_dir.expanduser()
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        fail(f"--data-dir: {data_dir} exists and is not a folder")
    recipe = DEMO_PRESETS[preset]
    started = time.monotonic()
    directory = (data_dir or Path(tempfile.mkdtemp(prefix="astro-demo-"))).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    _say(f"astro demo ({preset} preset): everything goes to {directory}")
    platform: LocalPlatform | None = None
    try:
        model_dir = _warm_start(directory, recipe)
        platform, addresses = _start_platform(directory, model_dir)
        report = _run(directory, recipe, addresses, model_dir)
    except KeyboardInterrupt:
        _stop(platform)
        fail("interrupted; every service stopped", code=130)
    except typer.Exit:
        _stop(platform)
        raise
    except Exception as exc:  # one line, everything stopped
        _stop(platform)
        fail(f"{type(exc).__name__}: {exc}", code=1)
    codes = _stop(platform)
    if any(codes.values()):
        fail(f"services exited uncleanly: {codes}", code=1)
    _say(f"report: {report}")
    _say(f"demo finished in {_minutes(time.monotonic() - started)}; artifacts in {directory}")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _stop(platform: LocalPlatform | None) -> dict[str, int]:
    return platform.stop() if platform is not None else {}


def _warm_start(directory: Path, recipe: DemoPreset) -> Path:
    from astro_core.models.warm_start import check_verdicts, family_accuracy, warm_start_model
    from astro_core.synthetic import parse_synth_spec

    config = recipe.warm_start
    _say(
        f"[1/4] warm-start: a {config.num_hidden_layers}-layer Llama (hidden "
        f"{config.hidden_size}) SFT-ed {config.max_steps} steps on noisy one-guess solutions "
        f"of {config.problems} train problems ({config.noise:.0%} of them answer a guess "
        "their own check calls wrong)"
    )
    began = time.monotonic()
    model_dir = warm_start_model(directory / "warm-start", config)
    heldout = recipe.heldout_problems()
    figures = family_accuracy(model_dir, heldout, samples=recipe.accuracy_samples)
    _say(
        f"      done in {time.monotonic() - began:.0f} s; on {figures.problems} held-out "
        f"problems: greedy {figures.greedy:.0%}, sampled {figures.sampled:.0%}, "
        f"pass@{figures.samples} {figures.pass_at_k:.0%}, right and wrong among the samples "
        f"{figures.right_and_wrong:.0%}"
    )
    # Reflection can only follow a check the model judges right: the demo's bottleneck.
    verdicts = check_verdicts(model_dir, parse_synth_spec(recipe.heldout_path).family_problems())
    _say(
        f"      its verdict on a written-out check: wrong guesses called wrong "
        f"{verdicts.on_wrong_guesses:.0%}, right guesses called right "
        f"{verdicts.on_right_guesses:.0%} ({verdicts.checks} checks)"
    )
    return model_dir


def _start_platform(directory: Path, model_dir: Path) -> tuple[LocalPlatform, dict[str, Any]]:
    from services.launcher import LocalPlatform, UpConfig

    platform = LocalPlatform(
        UpConfig(
            data_dir=str(directory),
            common={"port": 0, "metrics_port": None},
            overrides={
                "generator": {"settings": {"model": {"path": str(model_dir)}}},
                "coordinator": {"settings": {"stage_retries": 0}},
            },
        )
    )
    began = time.monotonic()
    addresses = platform.start()  # stops what it started if it fails
    names = ", ".join(f"{name} {info['address']}" for name, info in addresses.items())
    _say(f"[2/4] platform up in {time.monotonic() - began:.0f} s: {names}")
    return platform, addresses


def _run(directory: Path, recipe: DemoPreset, addresses: dict[str, Any], model_dir: Path) -> str:
    from astro_cli.commands.run import RunView
    from services.coordinator.runs.client import RunsClient
    from services.registry.client import RegistryClient

    with RegistryClient(addresses["registry"]["address"]) as registry:
        base = registry.register(BASE_MODEL_NAME, model_dir, stage="base", aliases=["demo"])
    spec = recipe.run_spec(base.ref, name=f"x * b = c, {recipe.search_problems} problems searched")
    with RunsClient(addresses["coordinator"]["address"]) as client:
        status = client.start(spec, client_request_id=uuid.uuid4().hex)
        _say(
            f"[3/4] run {status.run_id} from {base.ref}: "
            + " -> ".join(s.name for s in status.stages if s.state != "skipped")
        )
        with RunView(status) as view:
            for event in client.follow(status.run_id):
                view.update(event)
        status = client.get(status.run_id)
    if status.state != "succeeded":
        raise RuntimeError(f"run {status.run_id} {status.state}: {status.message}")
    _summary(status)
    return str(status.artifacts["report.html"])


def _summary(status: Any) -> None:
    """Accuracy and backtracks per answer of each checkpoint on the held-out problems, and
    whether it goes back when it should: after a wrong answer more often than a right one
    (the truth), and after an attempt its own check calls wrong more often than one it
    calls right (acting on its check, which can be learned while the check is unreliable)."""
    metrics = {k: v for s in status.stages if s.name == "eval" for k, v in s.metrics.items()}

    def shares(prefix: str, kinds: tuple[str, str]) -> str:
        return " / ".join(
            f"{metrics[f'{prefix}.back_after_{kind}']:.0%}"
            if f"{prefix}.back_after_{kind}" in metrics
            else "-"
            for kind in kinds
        )

    _say("[4/4] on the held-out problems (samples per problem as in the eval section):")
    _say(
        f"      {'':<12}{'':>10}{'backtracks':>12}{'goes back after an answer that is':>36}"
        f"{'... that its check calls':>27}"
    )
    _say(
        f"      {'checkpoint':<12}{'accuracy':>10}{'per answer':>12}{'wrong / right':>36}"
        f"{'wrong / right':>27}"
    )
    for label in status.spec.eval_checkpoints:
        for key in sorted(
            k for k in metrics if k.startswith(f"{label}.") and k.endswith(".accuracy")
        ):
            prefix = key.removesuffix(".accuracy")
            backtracks = metrics.get(f"{prefix}.backtracks", 0.0)
            truth = shares(prefix, ("wrong", "right"))
            called = shares(prefix, ("called_wrong", "called_right"))
            _say(
                f"      {label:<12}{metrics[key]:>10.1%}{backtracks:>12.2f}{truth:>36}{called:>27}"
            )


def register(app: typer.Typer) -> None:
    app.command()(demo)
