"""`astro demo`: the main job on one machine.

Today it builds the tiny model, starts the whole platform on loopback (embedded Redis unless
REDIS_URL is set), checks every service's health and stops it again. Later stages of the
pipeline (search, clone, train, eval) join here as they land.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from astro_cli.errors import fail


def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory (default: a fresh temporary one).")
    ] = None,
) -> None:
    """Run the local demo end to end and report each step."""
    from astro_core.models.tiny import ensure_tiny_model
    from services.health import check_health
    from services.launcher import LocalPlatform, UpConfig

    directory = data_dir or Path(tempfile.mkdtemp(prefix="astro-demo-"))
    started = time.monotonic()
    model_dir = ensure_tiny_model(directory / "models" / "tiny-llama")
    typer.echo(f"[1/3] tiny model ready at {model_dir}")
    platform = LocalPlatform(
        UpConfig(data_dir=str(directory), common={"port": 0, "metrics_port": 0})
    )
    try:
        addresses = platform.start()
        typer.echo(f"[2/3] platform up: {len(addresses)} services")
        unhealthy = []
        for name, info in addresses.items():
            result = check_health(platform.client_config(info["address"]))
            typer.echo(f"      {name:<12} {info['address']:<22} {result}")
            if result != "SERVING":
                unhealthy.append(name)
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc), code=1)
    finally:
        codes = platform.stop()
    typer.echo(f"[3/3] platform stopped cleanly: {all(c == 0 for c in codes.values())}")
    if unhealthy or any(codes.values()):
        fail(f"demo failed: unhealthy={unhealthy} exit codes={codes}", code=1)
    typer.echo(f"demo finished in {time.monotonic() - started:.1f}s; artifacts in {directory}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
