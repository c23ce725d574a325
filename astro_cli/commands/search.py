"""`astro search`: MCTS over reasoning steps for a file of problems; writes the trees (JSONL).

With --coordinator the search runs on that SearchCoordinator; without, this process starts a
coordinator service in-process on loopback with an embedded Redis, searching with the local
HF engine and verifier pool, and talks to it over the same gRPC API.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail

PRESET_NAMES = ["tiny", "paper"]


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


@contextlib.contextmanager
def local_coordinator(model_path: str) -> Iterator[str]:
    """A coordinator in this process, on an embedded Redis, searching with the local HF engine
    and verifier pool directly; yields its address."""
    from functools import partial

    from astro_core.answers import VerifierConfig, VerifierPool
    from astro_core.engines import EngineConfig, load_engine
    from astro_core.paths import data_dir
    from services.coordinator.server import register
    from services.coordinator.worker import Backends
    from services.runtime.config import ServiceConfig
    from services.runtime.redis_store import connect_redis
    from services.testing import ServiceThread

    engine = load_engine(EngineConfig(kind="hf", model_path=model_path))
    pool = VerifierPool(VerifierConfig())

    def close() -> None:
        pool.close()
        engine.close()

    backends = Backends(engine, pool, engine.chat_template, close)
    work = tempfile.TemporaryDirectory(prefix="search-", dir=data_dir())
    with contextlib.ExitStack() as stack:
        stack.callback(work.cleanup)
        redis = stack.enter_context(connect_redis(None, Path(work.name) / "redis"))
        config = ServiceConfig(
            port=0,
            metrics_port=None,
            grace_seconds=1,
            redis_url=redis.url,
            settings={"poll_seconds": 0.1},
        )
        service = ServiceThread("coordinator", partial(register, backends=backends), config)
        service.start()
        stack.callback(service.stop)
        yield service.address


def search(
    problems: Annotated[
        Path, typer.Option(help="JSONL with `problem` and `answer` fields (e.g. MATH-500).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the trees (JSONL, one per line).")],
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
    from astro_core.config import ConfigError
    from astro_core.problems import load_problems
    from astro_core.search.config import load_search_config

    if preset not in PRESET_NAMES:
        fail(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
    if limit is not None and limit < 1:
        fail("--limit: must be >= 1")
    try:
        load_search_config(preset, config)
        chosen = load_problems(problems, limit)
    except ConfigError as exc:
        fail(f"--config: {exc}")
    except FileNotFoundError:
        fail(f"--problems: file not found: {problems}")
    except ValueError as exc:
        fail(f"--problems: {exc}")
    if not chosen:
        fail(f"--problems: no problems in {problems}")
    config_yaml = config.read_text() if config else ""
    ref = model_ref(model)
    if coordinator:
        trees = run_search(coordinator, chosen, preset, config_yaml, ref)
    else:
        if ref.get("name"):
            fail(
                "--model: a registered checkpoint needs --coordinator (a platform with a registry)"
            )
        if not ref:
            from astro_core.models.tiny import ensure_tiny_model
            from astro_core.paths import default_tiny_model_dir

            ref = {"path": str(ensure_tiny_model(default_tiny_model_dir()))}
        with local_coordinator(ref["path"]) as address:
            trees = run_search(address, chosen, preset, config_yaml, {})
    from astro_core.trees import write_trees

    out.parent.mkdir(parents=True, exist_ok=True)
    write_trees(out, trees)
    solved = sum(1 for t in trees if any(n.correct for n in t.terminals()))
    nodes = sum(len(t.nodes) for t in trees)
    typer.echo(f"wrote {len(trees)} trees ({nodes} nodes, {solved} solved) to {out}")


def run_search(
    address: str, problems: list[Any], preset: str, config_yaml: str, model: dict[str, Any]
) -> list[Any]:
    """Start the search, show its progress bar, return the exported trees (SearchTree).
    Errors end the command with one line (the coordinator's message)."""
    import grpc
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from services.coordinator.client import SearchClient

    sid = ""
    with SearchClient(address) as client:
        try:
            sid = client.start(problems, preset=preset, config_yaml=config_yaml, model=model)
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
            fail(f"coordinator at {address}: {exc.code().name}: {exc.details()}", code=1)
        except KeyboardInterrupt:
            if sid:
                with contextlib.suppress(grpc.RpcError):
                    client.cancel(sid, timeout=5)
            fail(f"interrupted; search {sid} cancelled", code=130)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
