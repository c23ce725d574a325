"""`astro eval`: score a model on MATH-500 / AMC 2023 / AIME 2024 (or any problems JSONL).

The model is a directory or a registered NAME:VERSION / NAME@ALIAS (pulled from --registry).
Without --generator it runs in this process on an engine (hf by default); with --generator
the generator service samples, and is first switched to --model when one is given. Grading
uses the in-process verifier pool, or --verifier HOST:PORT. Rerunning the same command on the
same --out continues a killed evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail

ARMS = ("base", "sft", "rl", "direct_sft", "direct_rl")


def _help(field: str) -> str:
    from astro_core.evaluation.config import EvalConfig

    return EvalConfig.model_fields[field].description or field


def _config_path(value: str | None) -> Path | None:
    """A YAML file, or the name of a preset in astro_core/evaluation/presets."""
    if value is None:
        return None
    from astro_core.evaluation.config import PRESETS_DIR

    preset = PRESETS_DIR / f"{value}.yaml"
    if "/" not in value and not value.endswith((".yaml", ".yml")) and preset.is_file():
        return preset
    if not Path(value).is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        fail(f"--config: {value} is neither a file nor a preset ({presets})")
    return Path(value)


def _model_source(model: str) -> dict[str, Any]:
    """--model as ModelSource fields: {} (the tiny model), a path, or a registered ref."""
    from astro_core.checkpoints import parse_ref

    if not model:
        return {}
    path = Path(model).expanduser()
    if path.is_dir():
        return {"path": str(path.resolve())}
    if "/" in model or model.startswith("."):
        fail(f"--model: directory not found: {model}")
    try:
        name, version, alias = parse_ref(model)
    except ValueError as exc:
        fail(f"--model: {exc} (give a directory, NAME:VERSION or NAME@ALIAS)")
    return {"name": name, "version": version, "alias": alias}


def _reason(exc: BaseException) -> str:
    """One line about a failure: a gRPC status and its details, else the message."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}".replace("\n", " ")
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _local_generator(
    source: dict[str, Any], registry: str | None, engine: str, device: str
) -> Iterator[Any]:
    """An in-process engine for the model, pulling a registered checkpoint first."""
    from astro_core.engines import EngineConfig, ModelNotFound, ModelSource, load_engine
    from astro_core.engines import resolve_model as resolve
    from astro_core.paths import data_dir

    version = ""
    if not source:
        from astro_core.models.tiny import ensure_tiny_model
        from astro_core.paths import default_tiny_model_dir

        path = str(ensure_tiny_model(default_tiny_model_dir()))
    else:
        store = None
        if source.get("name"):
            from astro_cli.commands.ckpt import _address
            from services.registry.client import RegistryClient
            from services.runtime.config import client_config_from_env

            store = RegistryClient(client_config_from_env(_address(registry), timeout_seconds=60))
        try:
            resolved = resolve(ModelSource(**source), store, data_dir() / "models")
        except ModelNotFound as exc:
            fail(f"--model: {_reason(exc)}", code=1)
        except (ValueError, RuntimeError) as exc:
            fail(f"--model: {_reason(exc)}", code=1)
        except Exception as exc:  # the registry unreachable, a failed pull
            fail(f"--model: cannot fetch {ModelSource(**source).describe()}: {_reason(exc)}", 1)
        finally:
            if store is not None:
                store.close()  # type: ignore[attr-defined]
        path, version = str(resolved.path), resolved.version
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar is the one to watch
    kind = "vllm" if engine == "vllm" else "hf"
    generator = load_engine(
        EngineConfig(kind=kind, model_path=path, model_version=version, device=device)
    )
    try:
        yield generator
    finally:
        generator.close()


@contextlib.contextmanager
def _remote_generator(address: str, source: dict[str, Any], timeout: float) -> Iterator[Any]:
    """A client of the generator service, switched to `source` when one is given."""
    import grpc

    from services.generator.client import GeneratorClient
    from services.runtime.config import client_config_from_env

    client = GeneratorClient(client_config_from_env(address), timeout=timeout)
    try:
        if source:
            info = client.model_info()
            if source.get("path") != info.path or not source.get("path"):
                client.load_model(**source)
        yield client
    except grpc.RpcError as exc:
        fail(f"generator at {address}: {_reason(exc)}", code=1)
    finally:
        client.close()


@contextlib.contextmanager
def _verifier(address: str | None) -> Iterator[Any]:
    if address:
        import grpc

        from services.runtime.config import client_config_from_env
        from services.verifier.client import VerifierClient

        client = VerifierClient(client_config_from_env(address), timeout_seconds=600)
        try:
            yield client
        except grpc.RpcError as exc:
            fail(f"verifier at {address}: {_reason(exc)}", code=1)
        finally:
            client.close()
        return
    from astro_core.answers import VerifierConfig, VerifierPool

    with VerifierPool(VerifierConfig()) as pool:
        yield pool


def eval_command(
    out: Annotated[Path, typer.Option(help="Output directory: samples.jsonl, summary.json.")],
    model: Annotated[
        str,
        typer.Option(
            help="Model directory, or registered NAME:VERSION / NAME@ALIAS; "
            "default: the tiny model (or what --generator serves)."
        ),
    ] = "",
    benchmarks: Annotated[
        str | None,
        typer.Option(help="Comma-separated names (math500, amc23, aime24) or JSONL paths."),
    ] = None,
    n: Annotated[int | None, typer.Option(help=_help("n"))] = None,
    temperature: Annotated[float | None, typer.Option(help=_help("temperature"))] = None,
    top_p: Annotated[float | None, typer.Option(help=_help("top_p"))] = None,
    max_tokens: Annotated[int | None, typer.Option(help=_help("max_tokens"))] = None,
    greedy: Annotated[bool, typer.Option(help=_help("greedy"))] = False,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    limit: Annotated[int | None, typer.Option(help=_help("limit"))] = None,
    batch_problems: Annotated[int | None, typer.Option(help=_help("batch_problems"))] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the benchmark files; default: $ASTRO_SHARED_DATA, else "
            "../shared/data beside the repository."
        ),
    ] = None,
    problem_field: Annotated[
        str | None, typer.Option(help="Problem text field of a JSONL.")
    ] = None,
    answer_field: Annotated[str | None, typer.Option(help="Gold answer field of a JSONL.")] = None,
    id_field: Annotated[str | None, typer.Option(help="Problem id field of a JSONL.")] = None,
    config: Annotated[
        str | None,
        typer.Option(help="EvalConfig YAML, or a preset name (paper, cpu); flags override it."),
    ] = None,
    generator: Annotated[
        str | None, typer.Option(help="Generator service HOST:PORT; default: in-process engine.")
    ] = None,
    verifier: Annotated[
        str | None, typer.Option(help="Verifier service HOST:PORT; default: in-process pool.")
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(envvar="ASTRO_REGISTRY", help="Registry HOST:PORT for a registered --model."),
    ] = None,
    engine: Annotated[str, typer.Option(help="In-process engine: hf or vllm.")] = "hf",
    device: Annotated[
        str, typer.Option(help="In-process engine device: auto, cpu, cuda.")
    ] = "auto",
    label: Annotated[str, typer.Option(help="Name of this checkpoint in reports.")] = "",
    arm: Annotated[str, typer.Option(help="base, sft, rl, direct_sft or direct_rl.")] = "",
    step: Annotated[int | None, typer.Option(help="RL step of the checkpoint.")] = None,
) -> None:
    """Sample, grade and score benchmarks; prints a table per benchmark."""
    from astro_core.config import ConfigError, load_config
    from astro_core.engines import InvalidRequest
    from astro_core.evaluation import (
        EvalConfig,
        EvalConflict,
        EvaluatedModel,
        UnknownBenchmark,
        check_output_dir,
        evaluate,
        format_table,
        load_benchmark,
    )

    if engine not in ("hf", "vllm"):
        fail(f"--engine must be hf or vllm, not {engine!r}")
    if arm and arm not in ARMS:
        fail(f"--arm must be one of {', '.join(ARMS)}, not {arm!r}")
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "seed": seed,
            "limit": limit,
            "batch_problems": batch_problems,
            "shared_data": str(data_dir) if data_dir else None,
            "greedy": True if greedy else None,
        }.items()
        if value is not None
    }
    if benchmarks is not None:
        overrides["benchmarks"] = [b.strip() for b in benchmarks.split(",") if b.strip()]
    fields = {"problem": problem_field, "answer": answer_field, "id": id_field}
    if any(v is not None for v in fields.values()):
        overrides["fields"] = {k: v for k, v in fields.items() if v is not None}
    try:
        # No ASTRO_* environment overrides: ASTRO_DATA_DIR and friends mean other things.
        settings = load_config(
            EvalConfig, _config_path(config), overrides=overrides, env_prefix=None
        )
    except ConfigError as exc:
        fail(str(exc))
    repeated = {b for b in settings.benchmarks if settings.benchmarks.count(b) > 1}
    if repeated:
        fail(f"--benchmarks: {', '.join(sorted(repeated))} listed twice")
    try:
        loaded = [
            load_benchmark(b, settings.shared_data, settings.fields, settings.limit)
            for b in settings.benchmarks
        ]
    except UnknownBenchmark as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(str(exc), code=1)
    source = _model_source(model)
    try:  # before any model loads: a directory of another protocol is refused at once
        check_output_dir(out, settings)
    except EvalConflict as exc:
        fail(_reason(exc), code=1)
    except OSError as exc:
        fail(f"--out: {_reason(exc)}", code=1)
    described = (
        f"generator {generator}" + (f" serving {model}" if model else "")
        if generator
        else (model or "tiny model")
    )
    meta = EvaluatedModel(label=label, arm=arm or "", step=step, source=described)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        if generator:
            sampler = stack.enter_context(
                _remote_generator(generator, source, settings.request_timeout_seconds)
            )
        else:
            sampler = stack.enter_context(_local_generator(source, registry, engine, device))
        grader = stack.enter_context(_verifier(verifier))
        progress = stack.enter_context(_progress_bar())
        try:
            summary = evaluate(
                loaded, sampler, grader, settings, out, model=meta, progress=progress
            )
        except EvalConflict as exc:
            fail(_reason(exc), code=1)
        except InvalidRequest as exc:
            fail(f"the generator refused a request: {_reason(exc)}", code=1)
        except KeyboardInterrupt:
            fail(f"interrupted; rerun the same command to continue from {out}", code=130)
    typer.echo(format_table(summary))
    typer.echo(f"wrote {out / 'samples.jsonl'} and {out / 'summary.json'}")


@contextlib.contextmanager
def _progress_bar() -> Iterator[Any]:
    """A progress callback drawing one bar per benchmark with the running accuracy (stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from astro_core.evaluation import EvalProgress

    bars: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,  # the table printed at the end replaces it
    ) as bar:

        def update(event: EvalProgress) -> None:
            if event.benchmark not in bars:
                bars[event.benchmark] = bar.add_task(event.benchmark, total=event.problems_total)
            bar.update(
                bars[event.benchmark],
                completed=event.problems_done,
                description=f"{event.benchmark} (accuracy {event.accuracy:.1%} over "
                f"{event.samples_done} samples)",
            )

        yield update


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
