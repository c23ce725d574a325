"""`astro clone`: search trees -> SFT traces (ASTRO style, or the Direct-CoT control)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail

_STYLES = ("astro", "direct")


def _help(field: str) -> str:
    from astro_core.cloning.config import CloningConfig

    return CloningConfig.model_fields[field].description or field


def clone(
    trees: Annotated[Path, typer.Option(help="Search trees, JSONL, one tree a line.")],
    out: Annotated[
        Path, typer.Option(help="Traces to write (JSONL); the summary goes to OUT.summary.json.")
    ],
    style: Annotated[
        str, typer.Option(help="astro: reflect and backtrack; direct: the Direct-CoT control.")
    ] = "astro",
    k: Annotated[int | None, typer.Option(help=_help("k"))] = None,
    traces_per_problem: Annotated[
        int | None, typer.Option(help=_help("traces_per_problem"))
    ] = None,
    direct_traces_per_problem: Annotated[
        int | None, typer.Option(help=_help("direct_traces_per_problem"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_help("seed"))] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="CloningConfig YAML (presets: astro_core/cloning/presets/)."),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="HF tokenizer directory for the token counts of the summary."),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Generator service address (host:port) for the self-evaluation vote and "
            "`rewrite: llm`; without it the vote is off."
        ),
    ] = None,
) -> None:
    """Turn search trees into long chains of thought and write them with a summary."""
    import grpc
    from rich.console import Console
    from rich.progress import Progress

    from astro_core.cloning.config import CloningConfig
    from astro_core.cloning.dataset import (
        clone_trees,
        summary_path,
        write_summary,
        write_traces,
    )
    from astro_core.config import ConfigError, load_config
    from astro_core.trees import read_trees

    if style not in _STYLES:
        fail(f"--style must be astro or direct, not {style!r}")
    if not trees.is_file():
        fail(f"trees file not found: {trees}")
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "k": k,
            "traces_per_problem": traces_per_problem,
            "direct_traces_per_problem": direct_traces_per_problem,
            "seed": seed,
        }.items()
        if value is not None
    }
    try:
        settings = load_config(CloningConfig, config, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc))
    if settings.rewrite == "llm" and generator is None:
        fail("rewrite: llm needs a generator: pass --generator HOST:PORT")
    count_tokens, tokenizer_name = None, "approximate (words and punctuation)"
    if tokenizer is not None:
        count_tokens, tokenizer_name = _token_counter(tokenizer), str(tokenizer)

    total = sum(1 for line in trees.open(encoding="utf-8") if line.strip())
    if total == 0:
        fail(f"no trees in {trees}: nothing to clone", code=1)
    with ExitStack() as stack:
        client, template = None, None
        if generator is not None:
            client, template = _connect(generator)
            stack.callback(client.close)
        progress = stack.enter_context(Progress(console=Console(stderr=True), transient=True))
        task = progress.add_task("cloning trees", total=total)
        try:
            result = clone_trees(
                read_trees(trees),
                settings,
                style="direct" if style == "direct" else "astro",
                generator=client,
                template=template,
                count_tokens=count_tokens,
                tokenizer_name=tokenizer_name,
                on_tree=lambda _tree, _n: progress.advance(task),
            )
        except ValueError as exc:
            fail(str(exc))
        except grpc.RpcError as exc:
            fail(f"generator at {generator}: {exc.code().name}: {exc.details()}", code=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_traces(out, result.records)
    summary_file = summary_path(out)
    write_summary(summary_file, result.summary)
    s = result.summary
    typer.echo(
        f"wrote {s['traces']} {style} traces for {s['trees_traced']} of {s['trees']} problems "
        f"to {out} (summary: {summary_file}); no trace for {len(s['problems_without_trace'])} "
        f"(no correct terminal: {s['trees_without_correct_terminal']}); "
        f"backtracks per trace: {s['backtracks_histogram']}"
    )


def _connect(address: str) -> tuple[Any, Any]:
    """A gRPC Generator client and the chat template of the model it serves."""
    import grpc

    from services.generator.client import GeneratorClient

    client = GeneratorClient(address)
    try:
        return client, client.chat_template()
    except grpc.RpcError as exc:
        client.close()
        fail(f"generator at {address}: {exc.code().name}: {exc.details()}", code=1)


def _token_counter(directory: Path) -> Any:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        fail(f"cannot load a tokenizer from {directory}: {str(exc).splitlines()[0]}")
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def register(app: typer.Typer) -> None:
    app.command()(clone)
