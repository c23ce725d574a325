"""`astro ckpt ...`: register, list, show, alias, pull, delete and watch model checkpoints.

Every command talks to a registry service: `--registry HOST:PORT` (or ASTRO_REGISTRY), else
the one `astro up` recorded, else 127.0.0.1:50054. Files go over gRPC, so the registry may be
on another machine. A checkpoint is named `NAME`, `NAME:VERSION` or `NAME@ALIAS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from astro_cli.errors import fail

if TYPE_CHECKING:
    import grpc

    from astro_core.checkpoints import CheckpointInfo
    from services.registry.client import RegistryClient

ckpt = typer.Typer(
    help="Model checkpoints in the registry: register, list, show, alias, pull.",
    no_args_is_help=True,
)

Registry = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar="ASTRO_REGISTRY",
        help="Registry address HOST:PORT (default: the one `astro up` recorded).",
    ),
]


def _address(registry: str | None) -> str:
    if registry:
        return registry
    from services.catalog import SERVICES
    from services.launcher import read_state

    state = read_state()
    if state and "registry" in state.get("services", {}):
        return str(state["services"]["registry"]["address"])
    return f"127.0.0.1:{SERVICES['registry'].port}"


@contextmanager
def _client(registry: str | None, **options: bool) -> Iterator[RegistryClient]:
    """A client whose errors end the command with one line on stderr."""
    import grpc

    from astro_core.checkpoints import CheckpointError
    from services.registry.client import RegistryClient
    from services.runtime.config import client_config_from_env

    address = _address(registry)
    config = client_config_from_env(address, timeout_seconds=30.0, retry_attempts=3)
    client = RegistryClient(config, **options)
    try:
        yield client
    except CheckpointError as exc:  # not found, integrity, in use
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc), code=2)
    except OSError as exc:  # e.g. a file vanished while it was being uploaded
        fail(f"cannot read {exc.filename or 'a file'}: {exc.strerror or exc}", code=1)
    except grpc.RpcError as exc:
        _rpc_failed(address, exc)
    finally:
        client.close()


def _rpc_failed(address: str, exc: grpc.RpcError) -> NoReturn:
    import grpc

    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        fail(
            f"registry at {address} is not reachable (start it with `astro up`, "
            "or pass --registry HOST:PORT)",
            code=1,
        )
    fail(f"registry at {address}: {exc.code().name}: {exc.details()}", code=1)


def _ref(ref: str) -> tuple[str, int, str]:
    from astro_core.checkpoints import parse_ref

    try:
        return parse_ref(ref)
    except ValueError as exc:
        fail(f"{exc} (write NAME, NAME:VERSION or NAME@ALIAS)")


def _as_dict(info: CheckpointInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "version": info.version,
        "stage": info.stage,
        "step": info.step,
        "parent_version": info.parent_version,
        "aliases": list(info.aliases),
        "created": _when(info.created_unix),
        "artifact_uri": info.artifact_uri,
        "metrics": dict(info.metrics),
        "sha256": dict(sorted(info.sha256.items())),
    }


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix))


@ckpt.command("register")
def register_command(
    name: Annotated[str, typer.Argument(help="Model name, e.g. tiny-llama.")],
    directory: Annotated[str, typer.Argument(help="Checkpoint directory (or fsspec URL).")],
    stage: Annotated[str, typer.Option(help="base, sft or grpo.")] = "base",
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="Alias to point at it (repeatable).")
    ] = None,
    parent: Annotated[int, typer.Option(help="Version it was trained from (0: none).")] = 0,
    step: Annotated[int, typer.Option(help="Training step it was saved at.")] = 0,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="KEY=VALUE, e.g. reward=0.4 (repeatable).")
    ] = None,
    shared_storage: Annotated[
        bool, typer.Option(help="The registry reads DIRECTORY itself instead of an upload.")
    ] = False,
    registry: Registry = None,
) -> None:
    """Register DIRECTORY as the next version of NAME; prints the new version number."""
    from astro_core.checkpoints.artifacts import is_client_side

    if is_client_side(directory) and "://" not in directory:
        if not Path(directory).is_dir():
            fail(f"{directory} is not a directory")
        if not any(path.is_file() for path in Path(directory).rglob("*")):
            fail(f"{directory} holds no files")
    metrics: dict[str, float] = {}
    for item in metric or []:
        key, sep, value = item.partition("=")
        try:
            metrics[key] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            fail(f"--metric must be KEY=NUMBER, got {item!r}")
    with _client(registry, shared_storage=shared_storage) as client:
        info = client.register(
            name,
            directory,
            stage=stage,
            parent_version=parent,
            step=step,
            metrics=metrics,
            aliases=alias or [],
        )
    typer.echo(info.version)


@ckpt.command("list")
def list_command(
    name: Annotated[str, typer.Argument(help="Only this model (default: all).")] = "",
    stage: Annotated[str, typer.Option(help="Only this stage.")] = "",
    registry: Registry = None,
) -> None:
    """Registered versions, newest first."""
    with _client(registry) as client:
        infos = client.list(name, stage)
    rows = [("NAME", "VERSION", "STAGE", "STEP", "FILES", "CREATED (UTC)", "ALIASES")]
    for i in infos:
        rows.append(
            (
                i.name,
                str(i.version),
                i.stage,
                str(i.step),
                str(len(i.sha256)),
                _when(i.created_unix),
                ",".join(i.aliases),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@ckpt.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    registry: Registry = None,
) -> None:
    """Everything known about one version, as JSON (files with their sha256)."""
    name, version, alias = _ref(ref)
    with _client(registry) as client:
        info = client.get(name, version, alias)
    typer.echo(json.dumps(_as_dict(info), indent=2))


@ckpt.command("alias")
def alias_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to point the alias at.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. sft, best, or your own.")],
    registry: Registry = None,
) -> None:
    """Point ALIAS of NAME at VERSION (moving it if it pointed elsewhere)."""
    with _client(registry) as client:
        info = client.set_alias(name, version, alias)
    typer.echo(f"{info.ref} @{alias}")


@ckpt.command("pull")
def pull_command(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    dest: Annotated[Path, typer.Argument(help="Directory to create (absent or empty).")],
    registry: Registry = None,
) -> None:
    """Download a version into DEST, verifying every sha256; exits 1 on a mismatch."""
    name, version, alias = _ref(ref)
    with _client(registry) as client:
        path = client.pull(name, dest, version, alias)
    typer.echo(str(path))


@ckpt.command("delete")
def delete_command(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION.")],
    registry: Registry = None,
) -> None:
    """Delete one version and its files; refused while an alias points at it."""
    name, version, _ = _ref(ref)
    if not version:
        fail(f"delete needs NAME:VERSION, got {ref!r}")
    with _client(registry) as client:
        client.delete(name, version)
    typer.echo(f"deleted {name}:{version}")


@ckpt.command("watch")
def watch_command(
    name: Annotated[str, typer.Argument(help="Only this model (default: all).")] = "",
    registry: Registry = None,
) -> None:
    """Print new versions and alias moves as they happen, one line each; Ctrl-C stops."""
    with _client(registry) as client, client.watch(name) as events:
        try:
            for event in events:
                detail = f" @{event.alias}" if event.alias else ""
                typer.echo(f"{event.kind:<10} {event.checkpoint.ref}{detail}")
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    app.add_typer(ckpt, name="ckpt")
