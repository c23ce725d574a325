"""`astro graph`: draw a trace or a search tree as a directed graph (.svg, .png or .dot)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail

_TEXT_KEYS = ("response", "completion", "output", "text", "trace")


def split_location(spec: str) -> tuple[Path, int | None]:
    """FILE or FILE:LINE (1-based) -> (path, line)."""
    match = re.fullmatch(r"(.+):([+-]?[0-9]+)", spec)
    if match and not Path(spec).exists():
        line = int(match.group(2))
        if line < 1:
            fail(f"{spec}: line numbers start at 1, got {line}")
        return Path(match.group(1)), line
    return Path(spec), None


def read_json_line(path: Path, line: int) -> dict[str, Any]:
    if not path.is_file():
        fail(f"file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not 1 <= line <= len(lines):
        fail(f"{path} has {len(lines)} lines; there is no line {line}")
    try:
        data = json.loads(lines[line - 1])
    except json.JSONDecodeError as exc:
        fail(f"{path}:{line}: not valid JSON: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}:{line}: expected a JSON object")
    return data


def trace_text(data: dict[str, Any], where: str) -> str:
    """The trace in a dataset row (its last message) or in an eval sample (a text field)."""
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    for key in _TEXT_KEYS:
        if isinstance(data.get(key), str):
            return str(data[key])
    fail(f"{where}: no trace found (expected messages or one of {', '.join(_TEXT_KEYS)})")


def graph(
    out: Annotated[Path, typer.Option(help="Output file: .svg, .png or .dot (by extension).")],
    trace: Annotated[
        str | None,
        typer.Option(help="FILE[:LINE]: a traces/samples JSONL line (default 1) or a text file."),
    ] = None,
    tree: Annotated[
        str | None,
        typer.Option(help="FILE[:LINE]: a search-trees JSONL line (default 1)."),
    ] = None,
) -> None:
    """Draw a trace or a search tree; with both, the trace's walk is drawn over the tree."""
    from astro_core.cloning.graphs import (
        GraphRenderError,
        output_format,
        render,
        trace_graph,
        tree_graph,
    )
    from astro_core.trees import SearchTree

    if trace is None and tree is None:
        fail("give --trace FILE[:LINE] or --tree FILE[:LINE]")
    try:
        output_format(out)
    except ValueError as exc:
        fail(str(exc))
    row: dict[str, Any] | None = None
    text = ""
    if trace is not None:
        path, line = split_location(trace)
        if line is None and path.suffix not in (".jsonl", ".json"):
            if not path.is_file():
                fail(f"file not found: {path}")
            text = path.read_text(encoding="utf-8")
        else:
            row = read_json_line(path, line or 1)
            text = trace_text(row, f"{path}:{line or 1}")
    if tree is not None:
        path, line = split_location(tree)
        data = read_json_line(path, line or 1)
        try:
            search_tree = SearchTree.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            fail(f"{path}:{line or 1}: not a valid tree: {exc}")
        node_path = None
        if row is not None and "node_path" in row:
            if str(row.get("problem_id")) != search_tree.problem_id:
                fail(f"trace is for {row.get('problem_id')!r}, tree for {search_tree.problem_id!r}")
            node_path = [str(n) for n in row["node_path"]]
        try:
            drawing = tree_graph(search_tree, node_path)
        except ValueError as exc:
            fail(str(exc))
    else:
        if not text.strip():
            fail(f"{trace}: the trace is empty: nothing to draw", code=1)
        name = str(row.get("problem_id", "trace")) if row else "trace"
        drawing = trace_graph(text, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        render(drawing, out)
    except GraphRenderError as exc:
        fail(str(exc), code=1)
    typer.echo(f"wrote {out} ({len(drawing.nodes)} nodes, {len(drawing.edges)} edges)")


def register(app: typer.Typer) -> None:
    app.command()(graph)
