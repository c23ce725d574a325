"""`astro k8s job {sft,grpo}`: print the trainer Job for `kubectl apply -f -`.

    astro k8s job sft --config sft.yaml --values my-values.yaml --namespace ml | kubectl apply -f -
    kubectl -n ml get jobs -l astro.run=RUN_ID

The config is the file `astro train sft --config` takes; the values are the chart's
(helm/astro/values.yaml, then each --values file, as `helm -f` merges them). The Job is the
one the coordinator creates for the same job and values (services/jobs/builder.py).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from astro_cli.errors import fail

k8s = typer.Typer(
    help="Kubernetes: trainer Jobs built from the chart's values.", no_args_is_help=True
)


class StageChoice(StrEnum):
    sft = "sft"
    grpo = "grpo"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the config annotation) as readable `|` blocks; no YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def manifest_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False)


@k8s.command("job")
def job(
    stage: Annotated[StageChoice, typer.Argument(help="Which trainer: sft or grpo.")],
    config: Annotated[
        Path, typer.Option("--config", help="The stage's config (as `astro train` reads it).")
    ],
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", "-f", help="Chart values files, merged in order (repeatable)."),
    ] = None,
    release: Annotated[str, typer.Option(help="The Helm release's name.")] = "astro",
    namespace: Annotated[
        str, typer.Option(help="Namespace of the Job; default: kubectl's current one.")
    ] = "",
    run_id: Annotated[
        str | None, typer.Option(help="Run id (label astro.run); default: the config's run_id.")
    ] = None,
    chart: Annotated[
        Path | None, typer.Option(help="The chart directory; default $ASTRO_CHART_DIR.")
    ] = None,
) -> None:
    """Print the trainer Job (YAML) for `kubectl apply -f -`."""
    from pydantic import ValidationError

    from astro_core.config import format_validation_error
    from services.jobs.builder import build_trainer_job
    from services.jobs.spec import TrainJob, load_stage_config
    from services.jobs.values import ChartValuesError, load_chart_values

    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"config file not found: {config}")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"config file {config} cannot be read: {exc}")
    try:
        stage_config = load_stage_config(text, str(config))
        if run_id is not None:
            stage_config["run_id"] = run_id
        train_job = TrainJob(stage=stage.value, config=stage_config)
        chart_values = load_chart_values(
            values or [], chart_dir=chart, release=release, namespace=namespace
        )
        manifest = build_trainer_job(train_job, chart_values)
    except ValidationError as exc:
        fail(format_validation_error(exc, source=str(config)))
    except (ChartValuesError, ValueError) as exc:
        fail(str(exc))
    typer.echo(manifest_yaml(manifest), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(k8s, name="k8s")
