"""`astro serve`, `astro up`, `astro status`: run the services and check on them."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail
from astro_core.config import ConfigError, load_config

SERVICE_NAMES = ["coordinator", "generator", "verifier", "registry"]


def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}.")],
    config: Annotated[Path | None, typer.Option(help="ServiceConfig YAML file.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (0 picks a free one).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port.")] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write bound ports here when serving.")
    ] = None,
) -> None:
    """Run one service until SIGTERM or Ctrl-C (the container entrypoint)."""
    from services.catalog import SERVICES, load_register
    from services.runtime.config import load_service_config
    from services.runtime.logs import setup_json_logging
    from services.runtime.server import ServiceStartError, run_service

    if service not in SERVICES:
        fail(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "port": port,
            "host": host,
            "metrics_port": metrics_port,
            "ready_file": str(ready_file) if ready_file else None,
        }.items()
        if v is not None
    }
    if port is None and config is None:
        overrides["port"] = SERVICES[service].port
    try:
        service_config = load_service_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    setup_json_logging(service, service_config.log_level)
    try:
        asyncio.run(run_service(service, load_register(service), service_config))
    except ConfigError as exc:  # a bad `settings:` value, found when the service registers
        fail(f"{service}: {exc}")
    except ServiceStartError as exc:  # e.g. the port is taken, Redis unreachable
        fail(str(exc), code=1)


def up(
    config: Annotated[Path | None, typer.Option(help="UpConfig YAML file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory (default ~/.astro).")
    ] = None,
) -> None:
    """Start every service on loopback (embedded Redis without REDIS_URL); Ctrl-C stops all."""
    from services.launcher import LocalPlatform, UpConfig

    overrides = {"data_dir": str(data_dir)} if data_dir else None
    try:
        up_config = load_config(UpConfig, config, overrides=overrides, env_prefix=None)
    except ConfigError as exc:
        fail(str(exc))
    platform = LocalPlatform(
        up_config, report=lambda event: typer.echo(f"astro up: {event}", err=True)
    )

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # While starting, a signal interrupts the start (which stops what it began) ...
    signal.signal(signal.SIGTERM, interrupt)
    try:
        addresses = platform.start()
    except (RuntimeError, TimeoutError, ValueError) as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        fail("interrupted while starting; everything started was stopped", code=130)
    # ... once up, a signal asks the supervision loop below to stop everything in order.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for name, info in addresses.items():
        typer.echo(f"{name:<12} {info['address']:<22} metrics :{info['metrics_port']}  SERVING")
    typer.echo("astro is up; press Ctrl-C to stop.", err=True)
    exit_code = platform.supervise(stop)
    codes = platform.stop()
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad and exit_code == 0:
        typer.echo(f"error: services exited uncleanly: {bad}", err=True)
        exit_code = 1
    raise typer.Exit(exit_code)


def status(
    address: Annotated[
        list[str] | None,
        typer.Option(help="NAME=HOST:PORT to check; default: what `astro up` recorded."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory of `astro up`.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per health check.")] = 2.0,
) -> None:
    """Health of each service, one line each; exits 1 unless all are SERVING."""
    from services.catalog import SERVICES
    from services.health import check_health
    from services.launcher import read_state
    from services.runtime.config import client_config_from_env

    targets: dict[str, str] = {}
    if address:
        for item in address:
            name, sep, addr = item.partition("=")
            if not sep or not addr:
                fail(f"--address must be NAME=HOST:PORT, got {item!r}")
            if name not in SERVICES:
                fail(f"--address: unknown service {name!r}; choose from {', '.join(SERVICES)}")
            targets[name] = addr
    else:
        state = read_state(data_dir)
        if state:
            targets = {name: info["address"] for name, info in state["services"].items()}
        else:
            targets = {name: f"127.0.0.1:{spec.port}" for name, spec in SERVICES.items()}
    all_serving = True
    for name, addr in targets.items():
        result = check_health(client_config_from_env(addr), timeout=timeout)
        all_serving &= result == "SERVING"
        typer.echo(f"{name:<12} {addr:<22} {result}")
    raise typer.Exit(0 if all_serving else 1)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(up)
    app.command()(status)
