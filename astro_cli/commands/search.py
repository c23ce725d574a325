"""`astro search`: MCTS over reasoning steps for a file of problems; writes the trees (JSONL).

With --coordinator the search runs on that SearchCoordinator; without, this process starts a
coordinator service in-process on loopback with an embedded Redis, searching with the local
HF engine and verifier pool, and talks to it over the same gRPC API. Everything it starts
stops with it, whether the search ends, fails, or is interrupted (Ctrl-C or SIGTERM).

`astro search status ID` and `astro search cancel ID` ask a coordinator about a search:
`--coordinator` (or ASTRO_COORDINATOR), else the one `astro up` recorded.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    import grpc

PRESET_NAMES = ["tiny", "paper"]

search_app = typer.Typer(
    help="Search problems with MCTS over reasoning steps; check on or cancel a search.",
)


def model_ref(value: str) -> dict[str, Any]:
    """PATH (a directory) or a registered checkpoint NAME, NAME:VERSION or NAME@ALIAS."""
    if not value:
        return {}
    if Path(value).expanduser().is_dir() or "/" in value:
        return {"path": str(Path(value).expanduser().resolve())}
    if "@" in value:
        name, alias = value.split("@", 1)
        return {"name": name, "alias": alias}
    if ":" in value:
        name, version = value.rsplit(":", 1)
        if not version.isdigit():
            fail(f"--model: version in {value!r} must be a number")
        return {"name": name, "version": int(version)}
    return {"name": value}


def local_model(path: str) -> str:
    """The model directory an in-process search loads; one line and exit 2 if it is none."""
    from astro_core.engines.sources import ModelNotFound, ModelSource, resolve_model

    try:
        return str(resolve_model(ModelSource(path=path), None, "").path)
    except ModelNotFound:
        fail(f"--model: no model directory at {path}")
    except ValueError as exc:
        fail(f"--model: {exc}")


@contextlib.contextmanager
def local_coordinator(model_path: str) -> Iterator[str]:
    """A coordinator in this process, on an embedded Redis, searching with the local HF engine
    and verifier pool directly; yields its address. Whatever was started is stopped on every
    way out (the search's end, an error, an interrupt), newest first."""
    from functools import partial

    from astro_core.answers import VerifierConfig, VerifierPool
    from astro_core.engines import EngineConfig, load_engine
    from astro_core.paths import data_dir
    from services.coordinator.server import register
    from services.coordinator.worker import Backends
    from services.runtime.config import ServiceConfig
    from services.runtime.redis_store import connect_redis
    from services.testing import ServiceThread

    with contextlib.ExitStack() as stack:
        try:
            engine = load_engine(EngineConfig(kind="hf", model_path=model_path))
        except (OSError, ValueError) as exc:
            fail(f"--model: cannot load {model_path}: {exc}", code=1)
        stack.callback(engine.close)
        pool = VerifierPool(VerifierConfig())
        stack.callback(pool.close)
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="search-", dir=data_dir()))
        redis = stack.enter_context(connect_redis(None, Path(work) / "redis"))
        config = ServiceConfig(
            port=0,
            metrics_port=None,
            grace_seconds=1,
            redis_url=redis.url,
            settings={"poll_seconds": 0.1},
        )
        # The stack, not the service, closes the engine and the pool (Backends.close: no-op).
        backends = Backends(engine, pool, engine.chat_template)
        service = ServiceThread("coordinator", partial(register, backends=backends), config)
        stack.callback(service.stop)  # before start: a start that fails half-way is undone
        service.start()
        yield service.address


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the command like Ctrl-C (KeyboardInterrupt), so cleanup runs."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@search_app.callback(invoke_without_command=True)
def search(
    ctx: typer.Context,
    problems: Annotated[
        Path | None,
        typer.Option(help="JSONL with `problem` and `answer` fields (e.g. MATH-500). Required."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the trees (JSONL); its folder must exist. Required."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Search only the first N problems.")] = None,
    model: Annotated[
        str,
        typer.Option(help="Policy: a model directory or NAME[:VERSION|@ALIAS]; default tiny."),
    ] = "",
    preset: Annotated[str, typer.Option(help="SearchConfig preset: tiny or paper.")] = "tiny",
    config: Annotated[
        Path | None, typer.Option(help="YAML of SearchConfig fields over the preset.")
    ] = None,
    coordinator: Annotated[
        str | None, typer.Option(help="HOST:PORT of a running coordinator; default in-process.")
    ] = None,
) -> None:
    """Search every problem with MCTS over reasoning steps and write the trees."""
    if ctx.invoked_subcommand is not None:
        return
    from astro_core.config import ConfigError
    from astro_core.problems import load_problems
    from astro_core.search.config import load_search_config

    if problems is None or out is None:
        fail("--problems and --out are required (or a command: astro search status|cancel ID)")
    if preset not in PRESET_NAMES:
        fail(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
    if limit is not None and limit < 1:
        fail("--limit: must be >= 1")
    if out.is_dir():
        fail(f"--out: {out} is a folder; name a file in it")
    if not out.parent.is_dir():
        fail(f"--out: folder {out.parent} does not exist")
    if not problems.is_file():  # a folder, a device such as /dev/zero, nothing at all
        fail(f"--problems: no file at {problems}" + (" (a folder)" if problems.is_dir() else ""))
    try:
        load_search_config(preset, config)
        chosen = load_problems(problems, limit)
    except ConfigError as exc:
        fail(f"--config: {exc}")
    except ValueError as exc:  # includes a file that is not UTF-8 text
        fail(f"--problems: {exc}")
    except OSError as exc:
        fail(f"--problems: cannot read {problems}: {exc.strerror}")
    if not chosen:
        fail(f"--problems: no problems in {problems}")
    config_yaml = config.read_text() if config else ""
    ref = model_ref(model)
    if not coordinator and ref.get("name"):
        fail(
            f"--model: no model directory {model!r}, and a registered checkpoint needs "
            "--coordinator (a platform with a registry)"
        )
    try:
        with sigterm_interrupts():
            if coordinator:
                trees = run_search(coordinator, chosen, preset, config_yaml, ref)
            else:
                if ref:
                    path = local_model(ref["path"])
                else:
                    from astro_core.models.tiny import ensure_tiny_model
                    from astro_core.paths import default_tiny_model_dir

                    path = str(ensure_tiny_model(default_tiny_model_dir()))
                with local_coordinator(path) as address:
                    trees = run_search(address, chosen, preset, config_yaml, {})
    except KeyboardInterrupt:
        fail("interrupted; everything this command started was stopped", code=130)
    from astro_core.trees import write_trees

    write_trees(out, trees)
    solved = sum(1 for t in trees if any(n.correct for n in t.terminals()))
    nodes = sum(len(t.nodes) for t in trees)
    typer.echo(f"wrote {len(trees)} trees ({nodes} nodes, {solved} solved) to {out}")


def run_search(
    address: str, problems: list[Any], preset: str, config_yaml: str, model: dict[str, Any]
) -> list[Any]:
    """Start the search, show its progress bar, return the exported trees (SearchTree).
    Errors end the command with one line (the coordinator's message); an interrupt cancels
    the search and ends it with exit code 130."""
    import grpc
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from services.coordinator.client import SearchClient

    sid = ""
    with SearchClient(address) as client:
        try:
            sid = client.start(problems, preset=preset, config_yaml=config_yaml, model=model)
            typer.echo(f"search {sid} started on {address}", err=True)
            columns: list[Any] = [
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            ]
            state = "running"
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("searching", total=len(problems))
                for event in client.watch(sid):
                    nodes = int(event.metrics.get("nodes", 0))
                    solved = event.metrics.get("solved_fraction", 0.0)
                    bar.update(
                        task,
                        completed=event.done,
                        description=f"searching ({nodes} nodes, {solved:.0%} solved)",
                    )
                    state = event.state
            if state != "succeeded":
                fail(f"search {sid} ended {state}: {client.status(sid).message}", code=1)
            return client.export(sid)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
        except KeyboardInterrupt:
            if sid:
                with contextlib.suppress(grpc.RpcError):
                    client.cancel(sid, timeout=5)
            fail(f"interrupted; search {sid} cancelled", code=130)


# ---- status and cancel ------------------------------------------------------------------

Coordinator = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        envvar="ASTRO_COORDINATOR",
        help="Coordinator HOST:PORT (default: the one `astro up` recorded).",
    ),
]
SearchId = Annotated[str, typer.Argument(help="The id `astro search` or StartSearch gave.")]


def coordinator_address(coordinator: str | None) -> str:
    if coordinator:
        return coordinator
    from services.catalog import SERVICES
    from services.launcher import read_state

    state = read_state()
    if state and "coordinator" in state.get("services", {}):
        return str(state["services"]["coordinator"]["address"])
    return f"127.0.0.1:{SERVICES['coordinator'].port}"


def _rpc_failed(address: str, exc: grpc.RpcError) -> NoReturn:
    fail(f"coordinator at {address}: {exc.code().name}: {exc.details()}", code=1)


def _print_status(status: Any) -> None:
    typer.echo(f"search       {status.search_id}")
    typer.echo(f"state        {status.state}")
    typer.echo(f"problems     {status.problems_done}/{status.problems_total} done")
    typer.echo(f"solved       {status.solved_fraction:.0%} of those done")
    typer.echo(f"nodes        {status.nodes}")
    typer.echo(f"generations  {status.generator_calls} generator calls")
    typer.echo(f"elapsed      {status.elapsed_seconds:.1f} s")
    if status.message:
        typer.echo(f"message      {status.message}")


@search_app.command("status")
def status(search_id: SearchId, coordinator: Coordinator = None) -> None:
    """Where a search stands: state, problems done, nodes, solved share, message."""
    import grpc

    from services.coordinator.client import SearchClient

    address = coordinator_address(coordinator)
    with SearchClient(address, timeout=10) as client:
        try:
            _print_status(client.status(search_id))
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)


@search_app.command("cancel")
def cancel(search_id: SearchId, coordinator: Coordinator = None) -> None:
    """Cancel a running search; exits 1 if it had already succeeded or failed."""
    import grpc

    from services.coordinator.client import SearchClient

    address = coordinator_address(coordinator)
    with SearchClient(address, timeout=10) as client:
        try:
            result = client.cancel(search_id, timeout=10)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
    if result.state != "cancelled":
        fail(f"search {search_id} had already {result.state}; nothing to cancel", code=1)
    typer.echo(
        f"search {search_id} cancelled ({result.problems_done}/{result.problems_total} "
        "problems done)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(search_app, name="search")
