"""`astro experiment astro-vs-direct`: ASTRO against the Direct-CoT control, over seeds.

    astro experiment astro-vs-direct --preset cpu --out results/
    astro experiment astro-vs-direct --config exp.yaml --out results/ [--coordinator HOST:PORT]

Each seed is one run through the Runs service (both arms from the same trees, every RL
checkpoint of each evaluated); the report (report.md, report.json, PNGs) goes into --out.
Without --coordinator the local platform is started in --out/platform (as `astro demo` does)
and stopped on every exit path. docs/experiments.md describes the design and the presets.
Exit codes: 0 the report is written; 1 a run failed or a service could not be reached;
2 a usage error (a bad option or config).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    from astro_core.experiments.config import ExperimentConfig
    from astro_core.experiments.driver import RunOutcome
    from astro_core.pipeline.spec import RunSpec
    from services.coordinator.runs.client import RunsClient

experiment_app = typer.Typer(help="Controlled experiments run through the platform.")
FINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 1.0


def _load(config: Path | None, preset: str | None) -> ExperimentConfig:
    from astro_core.config import ConfigError
    from astro_core.experiments.config import load_experiment_config

    if config is None and preset is None:
        fail("give --config FILE or --preset mini|cpu|gpu")
    if config is not None and not config.is_file():
        fail(f"--config: no file at {config}")
    try:
        return load_experiment_config(config, preset)
    except ConfigError as exc:
        fail(f"--config: {exc}" if config else f"--preset: {exc}")


def warm_start(config: ExperimentConfig) -> Any:
    """(folder, seed) -> model directory: the family model warm-started with the seed."""
    from astro_core.models.warm_start import WarmStartConfig, warm_start_model, warm_start_preset

    fields = dict(config.warm_start)
    preset = fields.pop("preset", None)

    def start(folder: Path, seed: int) -> Path:
        # the seed initialises the model and draws the problems its records solve (a run
        # searches problems drawn with the same seed)
        chosen = {**fields, "seed": seed, "problems_seed": seed, "family": config.family}
        recipe = (
            warm_start_preset(str(preset), **chosen)
            if preset
            else WarmStartConfig.model_validate(chosen)
        )
        return warm_start_model(folder, recipe)

    return start


class Pipeline:
    """Runs RunSpecs on a coordinator (the given one, or a local platform started on first
    use with its generator on the first run's model); `close` stops what it started."""

    def __init__(self, out: Path, coordinator: str | None) -> None:
        self.out = out
        self.address = coordinator
        self.platform: Any = None
        self.client: RunsClient | None = None

    def _connect(self, spec: RunSpec) -> RunsClient:
        from services.coordinator.runs.client import RunsClient
        from services.launcher import LocalPlatform, UpConfig

        if self.client is not None:
            return self.client
        if self.address is None:
            typer.echo(f"starting the local platform in {self.out / 'platform'}")
            model = {"path": spec.base_model.path} if spec.base_model.path else {}
            self.platform = LocalPlatform(
                UpConfig(
                    data_dir=str(self.out / "platform"),
                    common={"port": 0, "metrics_port": 0},
                    overrides={
                        # Each seed's warm-started model lies in the experiment's folder.
                        "generator": {"settings": {"model": model, "model_roots": [str(self.out)]}},
                        "coordinator": {"settings": {"poll_seconds": 0.2, "stage_retries": 0}},
                    },
                ),
                report=lambda line: typer.echo(f"platform: {line}", err=True),
            )
            self.address = self.platform.start()["coordinator"]["address"]
        self.client = RunsClient(str(self.address))
        return self.client

    def __call__(self, spec: RunSpec, timeout: float) -> RunOutcome:
        from astro_core.experiments.driver import RunOutcome

        client = self._connect(spec)
        status = client.start(spec)
        run_id = status.run_id
        typer.echo(f"  run {run_id} in {status.output_dir}")
        deadline = time.monotonic() + timeout
        shown: dict[str, str] = {}
        while status.state not in FINAL:
            if time.monotonic() > deadline:
                client.cancel(run_id)
                return RunOutcome(run_id, "timed out", f"still running after {timeout:.0f}s")
            time.sleep(POLL_SECONDS)
            status = client.get(run_id)
            for stage in status.stages:
                if shown.get(stage.name) != stage.state and stage.state != "pending":
                    shown[stage.name] = stage.state
                    typer.echo(f"  {stage.name:<15} {stage.state}")
        return RunOutcome(
            run_id, status.state, status.message, status.output_dir, dict(status.artifacts)
        )

    def close(self) -> dict[str, int]:
        if self.client is not None:
            self.client.close()
        return self.platform.stop() if self.platform is not None else {}


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit, so `finally` blocks stop the platform."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@experiment_app.command("astro-vs-direct")
def astro_vs_direct(
    out: Annotated[Path, typer.Option(help="Folder of the runs' models and the report.")],
    config: Annotated[
        Path | None, typer.Option(help="ExperimentConfig YAML (over the preset, if any).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="mini | cpu | gpu.")] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(help="Coordinator HOST:PORT; default: start the local platform."),
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Only write the report again from the seeds run in --out.")
    ] = False,
) -> None:
    """Train ASTRO and Direct-CoT arms from the same trees over seeds and compare them."""
    import grpc

    from astro_core.experiments.driver import ExperimentFailed, report_again, run_experiment

    chosen = _load(config, preset)
    out = out.resolve()
    if report_only:
        try:
            again = report_again(out, chosen.name, {"preset": preset or "", "report_only": True})
        except (ExperimentFailed, OSError, ValueError) as exc:
            fail(str(exc), code=1)
        typer.echo(f"report: {out / 'report.md'} ({len(again.seeds)} seeds)")
        return
    started = time.monotonic()
    pipeline = Pipeline(out, coordinator)
    with _sigterm_unwinds():
        try:
            result = run_experiment(
                chosen,
                out,
                pipeline,
                warm_start=None if chosen.base_model else warm_start(chosen),
                progress=typer.echo,
                meta={"preset": preset or "", "config_file": str(config or "")},
            )
        except ExperimentFailed as exc:
            fail(str(exc), code=1)
        except grpc.RpcError as exc:
            code = 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
            fail(f"coordinator: {exc.code().name}: {exc.details()}", code=code)
        except (RuntimeError, TimeoutError, OSError) as exc:
            fail(str(exc), code=1)
        finally:
            codes = pipeline.close()
    if any(codes.values()):
        fail(f"services exited uncleanly: {codes}", code=1)
    ratio = result.rl_ratio()
    typer.echo(f"done in {time.monotonic() - started:.0f}s; ASTRO-RL / Direct-RL accuracy: "
               f"{'-' if ratio is None else f'{ratio:.3f}'}")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
