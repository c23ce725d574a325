"""`astro run`: the whole pipeline on a coordinator, from a RunSpec YAML (docs/runs.md).

    astro run --config run.yaml [--coordinator HOST:PORT]   # start it and follow it
    astro run status ID | list | watch ID | cancel ID

Following shows one progress bar per stage and, as each stage ends, its headline figures.
Ctrl-C detaches (the run goes on; `astro run watch ID` re-attaches). Exit codes: 0 the run
succeeded, 1 it failed or was cancelled (one line with the reason) or the coordinator could
not be reached, 2 a usage error (a bad option, a spec the coordinator refuses), 130 detached.

The coordinator is --coordinator, else $ASTRO_COORDINATOR, else the one `astro up` recorded.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from astro_cli.commands.search import coordinator_address
from astro_cli.errors import fail

if TYPE_CHECKING:
    import grpc

    from services.coordinator.runs.client import RunsClient

FINAL = ("succeeded", "failed", "cancelled")

run_app = typer.Typer(help="Run the whole pipeline (search -> ... -> report) on a coordinator.")

Coordinator = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        envvar="ASTRO_COORDINATOR",
        help="Coordinator HOST:PORT (default: the one `astro up` recorded).",
    ),
]
RunId = Annotated[str, typer.Argument(help="The run id `astro run` printed.")]


def _rpc_failed(address: str, exc: grpc.RpcError) -> NoReturn:
    import grpc

    code = 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    fail(f"coordinator at {address}: {exc.code().name}: {exc.details()}", code=code)


def read_spec(path: Path) -> Any:
    """The RunSpec in `path`; a model path relative to the file is made absolute (the
    coordinator resolves paths from its own folder)."""
    from astro_core.config import ConfigError
    from astro_core.pipeline import RunSpecError, load_run_spec

    if not path.is_file():
        fail(f"--config: no file at {path}")
    try:
        spec = load_run_spec(path)
    except (ConfigError, RunSpecError) as exc:
        fail(f"--config: {exc}")
    except RecursionError:  # the YAML parser recurses once per level of nesting
        fail(f"--config: {path} nests lists or mappings too deeply")
    model = spec.base_model.path
    if model and not Path(model).expanduser().is_absolute():
        local = (path.parent / model).resolve()
        if local.exists():
            spec.base_model.path = str(local)
    return spec


@run_app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="RunSpec YAML (docs/runs.md). Required to start a run.")
    ] = None,
    coordinator: Coordinator = None,
    request_id: Annotated[
        str,
        typer.Option(help="Idempotency key: the same key starts the run once (default: new)."),
    ] = "",
    detach: Annotated[bool, typer.Option(help="Print the run id and return at once.")] = False,
) -> None:
    """Start a run from a RunSpec YAML and follow it to its end."""
    if ctx.invoked_subcommand is not None:
        return
    import grpc

    from services.coordinator.runs.client import RunsClient

    if config is None:
        fail("--config is required (or a command: astro run status|list|watch|cancel)")
    spec = read_spec(config)
    address = coordinator_address(coordinator)
    with RunsClient(address) as client:
        try:
            status = client.start(spec, client_request_id=request_id or uuid.uuid4().hex)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
        typer.echo(f"run {status.run_id} started on {address}; artifacts in {status.output_dir}")
        if detach:
            return
        follow(client, address, status.run_id)


def follow(client: RunsClient, address: str, run_id: str) -> NoReturn:
    """Show the run's stages until it ends; exit with the run's outcome."""
    import grpc

    try:
        status = client.get(run_id)
        view = RunView(status)
        with view:
            for event in client.follow(run_id):
                view.update(event)
        status = client.get(run_id)
    except grpc.RpcError as exc:
        _rpc_failed(address, exc)
    except KeyboardInterrupt:
        typer.echo(
            f"\ndetached; run {run_id} goes on. Re-attach: astro run watch {run_id}", err=True
        )
        raise typer.Exit(130) from None
    if status.state == "succeeded":
        report = status.artifacts.get("report.html")
        typer.echo(f"run {run_id} succeeded" + (f"; report: {report}" if report else ""))
        raise typer.Exit(0)
    fail(f"run {run_id} {status.state}: {status.message or 'no reason given'}", code=1)


class RunView:
    """One progress bar per planned stage, and each stage's figures when it ends."""

    def __init__(self, status: Any) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self.printed: set[str] = set()
        for stage in status.stages:
            if stage.state != "skipped":
                self.tasks[stage.name] = self.progress.add_task(
                    f"{stage.name:<15}", total=stage.total or None, completed=stage.done
                )
                if stage.state == "succeeded":
                    self.printed.add(stage.name)

    def __enter__(self) -> RunView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, event: Any) -> None:
        if not event.stage:  # the run's own events: the final line says how it ended
            return
        task = self.tasks.get(event.stage)
        if task is None:
            return
        note = f" ({event.message})" if event.message and event.state == "running" else ""
        self.progress.update(
            task,
            completed=event.done,
            total=event.total or None,
            description=f"{event.stage:<15}{note}"[:60],
        )
        if event.state == "succeeded" and event.stage not in self.printed:
            self.printed.add(event.stage)
            self.progress.update(task, completed=event.total or 1, total=event.total or 1)
            # soft_wrap: a line too wide for the terminal (or for a log file's 80 columns)
            # is wrapped by whatever shows it, not broken inside a figure
            self.console.print(
                f"{event.stage}: {headline(event.stage, dict(event.metrics))}", soft_wrap=True
            )
        elif event.state in ("failed", "cancelled"):
            self.console.print(f"{event.stage} {event.state}: {event.message}", soft_wrap=True)


# Headline figures per stage kind; a template whose metric the stage lacks is left out.
_HEADLINES = {
    "search": [
        "{trees:.0f} trees",
        "{trees_with_correct_and_incorrect:.0f} with correct and incorrect terminals",
        "{solved_fraction:.0%} solved",
        "{nodes:.0f} nodes",
    ],
    "clone": [
        "{traces:.0f} traces",
        "{backtracks_per_trace:.2f} backtracks per trace",
        "{direct_traces:.0f} direct traces",
    ],
    "sft": ["loss {loss:.4f}", "{steps:.0f} steps"],
    "select_prompts": ["{kept:.0f} of {prompts:.0f} prompts kept"],
    "grpo": [
        "reward {reward_mean:.3f}",
        "completion length {completion_length_mean:.1f}",
        "{steps:.0f} steps",
    ],
    "report": ["{evaluations:.0f} evaluations"],
}


def headline(stage: str, metrics: dict[str, float]) -> str:
    """The figures a person looks at first, e.g. `16 trees, 12 with correct and incorrect
    terminals`; eval: accuracy per checkpoint and benchmark."""
    kind = stage.removesuffix("_direct")
    if kind == "eval":
        parts = [
            f"{key.removesuffix('.accuracy')} {metrics[key]:.1%}"
            for key in sorted(metrics, key=_checkpoint_order)
            if key.endswith(".accuracy")
        ]
    else:
        parts = []
        for template in _HEADLINES.get(kind, []):
            try:
                parts.append(template.format(**metrics))
            except KeyError:
                continue
        if not parts:
            parts = [f"{k} {v:g}" for k, v in list(metrics.items())[:6]]
    return ", ".join(parts) or "done"


_ARM_ORDER = ("base", "sft", "grpo", "direct_sft", "direct_grpo")


def _checkpoint_order(key: str) -> tuple[int, int, str]:
    """Eval metrics (`<label>.<set>.<figure>`) in the pipeline's order: base, SFT, RL (its
    checkpoints by step), then the Direct arms; a metrics map arrives in no order."""
    label = key.split(".", 1)[0]
    arm, _, step = label.partition("-step")
    rank = _ARM_ORDER.index(arm) if arm in _ARM_ORDER else len(_ARM_ORDER)
    return rank, int(step) if step.isdigit() else -1, key


# ---- status, list, watch, cancel --------------------------------------------------------


def _client(coordinator: str | None) -> tuple[str, RunsClient]:
    from services.coordinator.runs.client import RunsClient

    address = coordinator_address(coordinator)
    return address, RunsClient(address, timeout=15)


@run_app.command("status")
def status(run_id: RunId, coordinator: Coordinator = None) -> None:
    """Where a run stands: its state, each stage's state, figures and artifacts."""
    import grpc

    address, client = _client(coordinator)
    with client:
        try:
            found = client.get(run_id)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
    name = f" ({found.spec.name})" if found.spec.name else ""
    typer.echo(f"run      {found.run_id}{name}")
    typer.echo(f"state    {found.state}" + (f": {found.message}" if found.message else ""))
    typer.echo(f"output   {found.output_dir}")
    for stage in found.stages:
        progress = f" {stage.done}/{stage.total}" if stage.total else ""
        tries = f" (attempt {stage.attempts})" if stage.attempts > 1 else ""
        typer.echo(f"  {stage.name:<15} {stage.state}{progress}{tries}")
        if stage.metrics:
            typer.echo(f"    {headline(stage.name, dict(stage.metrics))}")
        if stage.message:
            typer.echo(f"    {stage.message}")
        for kind, value in sorted(stage.artifacts.items()):
            typer.echo(f"    {kind}: {value}")


@run_app.command("list")
def list_runs(
    coordinator: Coordinator = None,
    limit: Annotated[int, typer.Option(help="Runs per page (1-100).")] = 20,
    page_token: Annotated[str, typer.Option(help="Token of the next page, as printed.")] = "",
) -> None:
    """Runs, newest first: id, state, current stage, name."""
    import time

    import grpc

    if not 1 <= limit <= 100:
        fail("--limit: must be between 1 and 100")
    address, client = _client(coordinator)
    with client:
        try:
            page = client.list(limit, page_token)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
    for found in page.runs:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(found.created_unix))
        typer.echo(
            f"{found.run_id}  {created}  {found.state:<10} {found.stage:<15} {found.spec.name}"
        )
    if page.next_page_token:
        typer.echo(f"more: astro run list --page-token {page.next_page_token}")


@run_app.command("watch")
def watch(run_id: RunId, coordinator: Coordinator = None) -> None:
    """Follow a run (again) until it ends; Ctrl-C detaches."""
    address, client = _client(coordinator)
    with client:
        follow(client, address, run_id)


@run_app.command("cancel")
def cancel(
    run_id: RunId,
    coordinator: Coordinator = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the running stage to stop (0: don't).")
    ] = 60.0,
) -> None:
    """Cancel a run: its running stage stops (search, trainer process or Job); artifacts stay."""
    import math
    import time

    import grpc

    if not (math.isfinite(wait) and wait >= 0):
        fail("--wait: must be a number of seconds >= 0")
    address, client = _client(coordinator)
    with client:
        try:
            before = client.get(run_id)
            if before.state in FINAL:
                fail(f"run {run_id} had already {before.state}; nothing to cancel", code=1)
            after = client.cancel(run_id)
            stopped = [s for s in after.stages if s.state == "cancelled"]
            deadline = time.monotonic() + wait
            while stopped and time.monotonic() < deadline:
                current = client.get(run_id).stages
                stage = next(s for s in current if s.name == stopped[0].name)
                if stage.message != "cancelled":  # the driver noted how its work stopped
                    stopped = [stage]
                    break
                time.sleep(0.2)
        except grpc.RpcError as exc:
            _rpc_failed(address, exc)
    note = f"; {stopped[0].name}: {stopped[0].message}" if stopped else ""
    typer.echo(f"run {run_id} cancelled{note}")


def register(app: typer.Typer) -> None:
    app.add_typer(run_app, name="run")
