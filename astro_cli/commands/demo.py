"""`astro demo`: the main job on one machine, through the same services a cluster runs.

Builds the tiny model, starts the platform on loopback (embedded Redis unless REDIS_URL is
set), checks every service's health, then walks the stages that exist today:
search (MCTS through the coordinator, generator and verifier) -> procedure cloning (ASTRO and
Direct-CoT traces) -> a graph of a search tree -> the checkpoint registry (register and pull
back the model, sha256-verified). Every artifact is a file in the demo directory. Training
and evaluation join here as they land.

The tiny model is random, so it rarely reaches a `\\boxed{}` answer: expect few or no solved
trees and therefore few or no traces; the point is that each stage runs for real.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from astro_cli.errors import fail

STAGES = 6


def _step(index: int, text: str) -> None:
    typer.echo(f"[{index}/{STAGES}] {text}")


def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where artifacts go (default: a fresh temporary folder).")
    ] = None,
    problems: Annotated[
        Path | None, typer.Option(help="Problems JSONL (default: ../shared/data/math500.jsonl).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many problems to search.")] = 3,
) -> None:
    """Run the local demo end to end and report each stage."""
    from astro_core.models.tiny import ensure_tiny_model
    from astro_core.problems import load_problems
    from services.health import check_health
    from services.launcher import LocalPlatform, UpConfig

    if limit < 1:  # before anything starts or is written
        fail(f"--limit must be at least 1, got {limit}")
    problems_path = problems or _default_problems()
    try:
        chosen = load_problems(problems_path, limit)
    except (OSError, ValueError) as exc:
        fail(f"--problems: {exc}")
    if not chosen:
        fail(f"--problems: no problems in {problems_path}")
    directory = (data_dir or Path(tempfile.mkdtemp(prefix="astro-demo-"))).resolve()
    started = time.monotonic()
    model_dir = ensure_tiny_model(directory / "models" / "tiny-llama")
    _step(1, f"tiny model ready at {model_dir}")
    platform = LocalPlatform(
        UpConfig(
            data_dir=str(directory),
            common={"port": 0, "metrics_port": 0},
            overrides={"generator": {"settings": {"model": {"path": str(model_dir)}}}},
        )
    )
    try:
        addresses = platform.start()
        _step(2, f"platform up: {len(addresses)} services")
        for name, info in addresses.items():
            result = check_health(platform.client_config(info["address"]))
            typer.echo(f"      {name:<12} {info['address']:<22} {result}")
            if result != "SERVING":
                fail(f"service {name} is {result}", code=1)
        _run_stages(directory, chosen, addresses, model_dir)
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc), code=1)
    finally:
        codes = platform.stop()
    if any(codes.values()):
        fail(f"services exited uncleanly: {codes}", code=1)
    typer.echo(f"platform stopped cleanly; demo finished in {time.monotonic() - started:.0f}s")
    typer.echo(f"artifacts: {directory}")


def _default_problems() -> Path:
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "math500.jsonl"
    if not shared.exists():
        fail(f"no problems given and {shared} does not exist; pass --problems FILE")
    return shared


def _run_stages(directory: Path, problems: list, addresses: dict, model_dir: Path) -> None:
    from astro_cli.commands.search import run_search
    from astro_core.cloning import CloningConfig, clone_trees
    from astro_core.cloning.dataset import summary_path, write_summary, write_traces
    from astro_core.cloning.graphs import render, tree_graph
    from astro_core.trees import write_trees
    from services.registry.client import RegistryClient

    trees_path = directory / "trees.jsonl"
    trees = run_search(addresses["coordinator"]["address"], problems, "tiny", "", {})
    write_trees(trees_path, trees)
    nodes = sum(len(t.nodes) for t in trees)
    solved = sum(1 for t in trees if any(n.correct for n in t.terminals()))
    _step(3, f"search: {len(trees)} trees, {nodes} nodes, {solved} solved -> {trees_path}")

    config = CloningConfig()
    for style in ("astro", "direct"):
        result = clone_trees(trees, config, style=style)
        out = directory / f"traces.{style}.jsonl"
        write_traces(out, result.records)
        write_summary(summary_path(out), result.summary)
    _step(4, f"clone: {len(result.records)} traces per style -> {directory}/traces.*.jsonl")

    graph_path = render(tree_graph(max(trees, key=lambda t: len(t.nodes))), directory / "tree.svg")
    _step(5, f"graph of the largest tree -> {graph_path}")

    with RegistryClient(addresses["registry"]["address"]) as registry:
        info = registry.register("tiny-llama", model_dir, stage="base", aliases=["demo"])
        pulled = registry.pull("tiny-llama", directory / "pulled-model", alias="demo")
    files = json.dumps(sorted(info.sha256))
    _step(6, f"registry: {info.ref} ({len(info.sha256)} files {files[:60]}...) pulled to {pulled}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
