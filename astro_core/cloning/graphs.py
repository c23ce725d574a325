"""Traces and search trees as directed graphs: DOT text, rendered to SVG and PNG.

Steps are nodes. Edges are typed: `continue` (the next step), `reflect` (a step and the
self-reflection that follows it) and `backtrack` (back to an earlier step, or to the problem
for a restart). Tree nodes are filled by Q (red low, yellow middle, green high) and framed by
correctness (double green frame: correct answer; thick red frame: wrong answer).

Rendering runs a Graphviz `dot`: by default `graphviz-pure` (a pip-installed, self-contained
port, a dependency of this project), else a system `dot`; `ASTRO_GRAPHVIZ` names another.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from astro_core.cloning.linearize import is_ancestor
from astro_core.cloning.parse import split_trace
from astro_core.cloning.phrases import Phrases
from astro_core.cloning.verbalize import excerpt
from astro_core.trees import ROOT_ID, SearchTree, TreeNode

EdgeKind = Literal["continue", "reflect", "backtrack"]
EDGE_STYLE: dict[EdgeKind, dict[str, str]] = {
    "continue": {"color": "#4d4d4d"},
    "reflect": {"color": "#2166ac", "style": "dotted", "arrowhead": "vee"},
    "backtrack": {
        "color": "#d73027",
        "style": "dashed",
        "penwidth": "2",
        "constraint": "false",
        "fontcolor": "#d73027",
    },
}
FORMATS = ("dot", "svg", "png")
PROBLEM_NODE = "problem"
_STOP_WORDS = {"let", "lets", "let's", "back", "where", "the", "and", "our", "step", "went"}


class GraphRenderError(RuntimeError):
    """No renderer, or the renderer rejected the graph."""


@dataclass
class GraphNode:
    id: str
    label: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class GraphEdge:
    source: str
    target: str
    kind: EdgeKind
    label: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    title: str = ""

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)

    def to_dot(self) -> str:
        lines = [
            f"digraph {quote(self.name)} {{",
            '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, labelloc=t'
            + (f", label={quote(self.title)}" if self.title else "")
            + "];",
            '  node [shape=box, style="rounded,filled", fillcolor="#f7f7f7", '
            'fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=9];',
        ]
        for node in self.nodes:
            attrs = {"label": node.label, **node.attrs}
            lines.append(f"  {quote(node.id)} [{_attributes(attrs)}];")
        for edge in self.edges:
            attrs = {**EDGE_STYLE[edge.kind], **edge.attrs, "class": edge.kind}
            if edge.label:
                attrs["label"] = edge.label
            lines.append(f"  {quote(edge.source)} -> {quote(edge.target)} [{_attributes(attrs)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks.

    Model text can hold control characters (a NUL ends the string for Graphviz), so they
    are shown as U+FFFD."""
    escaped = (
        _CONTROL.sub("\ufffd", text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    )
    return f'"{escaped}"'


def _attributes(attrs: dict[str, str]) -> str:
    return ", ".join(f"{key}={quote(value)}" for key, value in attrs.items())


def wrap(text: str, width: int = 36, lines: int = 4) -> str:
    wrapped = textwrap.wrap(" ".join(text.split()), width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 3] + "..."
    return "\n".join(wrapped)


# --- traces -----------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2} - _STOP_WORDS


def _resolve_target(
    description: str, candidates: list[str], texts: dict[str, str], phrases: Phrases
) -> str:
    """Which earlier step a backtrack goes to: an exact excerpt, else the best word overlap."""
    for step in reversed(candidates):
        if phrases.reference(excerpt(texts[step])) == description:
            return step
    wanted = _words(description)
    scored = [
        (len(wanted & _words(texts[s])) / (len(wanted | _words(texts[s])) or 1), s)
        for s in candidates
    ]
    best = max(scored, default=(0.0, PROBLEM_NODE))
    return best[1] if best[0] > 0 else (candidates[-1] if candidates else PROBLEM_NODE)


def trace_graph(text: str, phrases: Phrases | None = None, name: str = "trace") -> Graph:
    """A trace (ours or any model output) as a graph of its steps, reflections and backtracks."""
    phrases = phrases or Phrases()
    graph = Graph(name, [GraphNode(PROBLEM_NODE, "problem", {"shape": "oval"})], title=name)
    texts: dict[str, str] = {}
    branch: list[str] = []  # the steps from the problem to where we are
    dead_ends: set[str] = set()
    anchor, reflection = PROBLEM_NODE, None
    for number, segment in enumerate(split_trace(text, phrases)):
        if segment.kind == "step":
            step = f"s{number}"
            texts[step] = segment.text
            attrs = {"peripheries": "2"} if "\\boxed" in segment.text else {}
            graph.nodes.append(GraphNode(step, wrap(segment.text), attrs))
            graph.edges.append(GraphEdge(anchor, step, "continue"))
            anchor, reflection = step, None
            branch.append(step)
        elif segment.kind in ("reflection", "unsure", "confident"):
            if reflection is None or segment.kind == "reflection":
                reflection = f"r{number}"
                graph.nodes.append(GraphNode(reflection, "reflect?", {"shape": "ellipse"}))
                graph.edges.append(GraphEdge(anchor, reflection, "reflect"))
            if segment.kind != "reflection":
                verdict = "not sure" if segment.kind == "unsure" else "correct so far"
                colour = "#fdae61" if segment.kind == "unsure" else "#a6d96a"
                graph.node(reflection).attrs["fillcolor"] = colour
                graph.node(reflection).label = verdict
        else:
            if segment.kind == "restart":
                target = PROBLEM_NODE
            else:
                description = segment.description or segment.text
                target = _resolve_target(description, branch[:-1], texts, phrases)
            if branch:
                dead_ends.add(branch[-1])
            graph.edges.append(GraphEdge(reflection or anchor, target, "backtrack", "back"))
            branch = branch[: branch.index(target) + 1] if target in branch else []
            anchor, reflection = target, None
    for step in dead_ends - set(branch):
        graph.node(step).attrs["fillcolor"] = "#fddbc7"
    for step in branch:
        graph.node(step).attrs["fillcolor"] = "#d9f0d3"
    return graph


# --- trees ------------------------------------------------------------------------------


def q_colour(q: float, low: float, high: float) -> str:
    """Red at `low`, yellow midway, green at `high`."""
    stops = [(0xF4, 0x6D, 0x43), (0xFF, 0xFF, 0xBF), (0x66, 0xBD, 0x63)]
    t = 0.0 if high <= low else min(max((q - low) / (high - low), 0.0), 1.0)
    left, right, u = (stops[0], stops[1], t * 2) if t < 0.5 else (stops[1], stops[2], t * 2 - 1)
    r, g, b = (round(a + (c - a) * u) for a, c in zip(left, right, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _tree_label(node: TreeNode) -> str:
    label = wrap(node.text, lines=3) + f"\nQ={node.q:.2f}  N={node.visits}"
    if node.terminal:
        verdict = {True: "correct", False: "wrong", None: "unverified"}[node.correct]
        label += f"\nanswer: {node.answer} ({verdict})"
    return label


def tree_graph(tree: SearchTree, node_path: list[str] | None = None) -> Graph:
    """A search tree; with `node_path`, one trace's walk drawn over it (bold, with backtracks)."""
    low = -1.0 if any(n.q < 0 for n in tree.nodes) else 0.0
    high = max([1.0] + [n.q for n in tree.nodes])
    graph = Graph(
        f"tree {tree.problem_id}",
        title=f"{tree.problem_id}: fill = Q (red {low:g} .. green {high:g}); "
        "double green frame = correct answer, red frame = wrong answer",
    )
    for node in tree.nodes:
        if node.id == ROOT_ID:
            label = "problem\n" + wrap(tree.problem, lines=3)
            graph.nodes.append(GraphNode(node.id, label, {"shape": "oval"}))
            continue
        attrs = {"fillcolor": q_colour(node.q, low, high)}
        if node.kind == "rollout":
            attrs["style"] = "rounded,filled,dashed"
        if node.terminal and node.correct is True:
            attrs.update(color="#1a9850", penwidth="3", peripheries="2")
        elif node.terminal and node.correct is False:
            attrs.update(color="#d73027", penwidth="3")
        graph.nodes.append(GraphNode(node.id, _tree_label(node), attrs))
        graph.edges.append(GraphEdge(node.parent or ROOT_ID, node.id, "continue"))
    if node_path:
        _overlay_walk(graph, tree, node_path)
    return graph


def _overlay_walk(graph: Graph, tree: SearchTree, node_path: list[str]) -> None:
    index = tree.by_id()
    moves = 0
    for before, after in zip(node_path, node_path[1:], strict=False):
        if after not in index or before not in index:
            raise ValueError(f"node path names {before!r}/{after!r}, not in tree")
        if is_ancestor(tree, after, before):
            moves += 1
            graph.edges.append(GraphEdge(before, after, "backtrack", f"back {moves}"))
        else:
            for edge in graph.edges:
                if edge.source == before and edge.target == after:
                    edge.attrs.update(color="#2166ac", penwidth="3")


# --- rendering --------------------------------------------------------------------------


def find_renderer() -> str:
    candidates = [
        os.environ.get("ASTRO_GRAPHVIZ"),
        shutil.which("graphviz-pure"),
        str(Path(sys.executable).parent / "graphviz-pure"),
        shutil.which("dot"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise GraphRenderError(
        "no Graphviz renderer found: `pip install graphviz-pure` (or set ASTRO_GRAPHVIZ)"
    )


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    suffix = "dot" if suffix == "gv" else suffix
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown graph format {suffix!r}; use .dot, .svg or .png")
    return suffix


def render(graph: Graph | str, out: str | Path) -> Path:
    """Write the graph to `out` as DOT, SVG or PNG (by extension)."""
    dot = graph if isinstance(graph, str) else graph.to_dot()
    out = Path(out)
    fmt = output_format(out)
    if fmt == "dot":
        out.write_text(dot, encoding="utf-8")
        return out
    try:
        result = subprocess.run(
            [find_renderer(), f"-T{fmt}", "-o", str(out)],
            input=dot.encode("utf-8"),
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphRenderError(f"rendering {out} failed: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GraphRenderError(f"rendering {out} failed: {message[0] if message else 'no output'}")
    return out
