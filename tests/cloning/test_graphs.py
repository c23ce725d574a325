"""Graphs of traces and trees: valid DOT, and SVG/PNG files a person can open."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from astro_core.cloning.graphs import (
    PROBLEM_NODE,
    GraphRenderError,
    q_colour,
    render,
    trace_graph,
    tree_graph,
)
from astro_core.cloning.linearize import is_ancestor, merge_paths
from astro_core.cloning.parse import split_trace
from astro_core.cloning.phrases import Phrases
from astro_core.cloning.verbalize import verbalize
from astro_core.trees import SearchTree
from tests.cloning.graph_checks import decode_png, parse_dot, svg_counts
from tests.cloning.trees import apples_tree, node

PATH = ("0.1.0", "0.0.0", "0.0.1.0")  # wrong, restart, wrong, back to 0.0, correct


def test_trace_graph_types_its_edges() -> None:
    tree = apples_tree()
    text = verbalize(tree, merge_paths(tree, PATH), Phrases())
    graph = trace_graph(text)
    parsed = parse_dot(graph.to_dot())
    segments = split_trace(text)
    steps = sum(s.kind == "step" for s in segments)
    reflections = sum(s.kind == "reflection" for s in segments)
    assert len(parsed.nodes) == 1 + steps + reflections
    edges = parsed.edges
    kinds = [kind for _, _, kind in edges]
    assert kinds.count("backtrack") == 2
    assert kinds.count("reflect") == reflections
    assert kinds.count("continue") == steps
    labels = {name: obj["label"] for name, obj in parsed.nodes.items()}
    targets = [labels[head] for _, head, kind in edges if kind == "backtrack"]
    assert targets[0] == "problem"  # the restart
    assert targets[1].startswith("Let x be the number")  # back to 0.0, found by its excerpt
    # the final branch is green, the abandoned ones red
    final = [n for n in graph.nodes if "boxed{4}" in n.label]
    assert final[0].attrs["fillcolor"] == "#d9f0d3"
    assert any(
        n.attrs.get("fillcolor") == "#fddbc7" and "boxed{21}" in n.label for n in graph.nodes
    )


def test_trace_graph_of_a_paraphrasing_model_output() -> None:
    output = (
        "Let a = 3 and compute the perimeter.\n\nThe area is 9, so the answer is 9.\n\n"
        "Hmm, I'm not sure. Let me go back to where I computed the perimeter.\n\n"
        "The perimeter is 12.\n\nLet's start over.\n\nA square of side 3 has area 9."
    )
    graph = trace_graph(output)
    edges = parse_dot(graph.to_dot()).edges
    back = [(tail, head) for tail, head, kind in edges if kind == "backtrack"]
    assert len(back) == 2
    assert graph.node(back[0][1]).label.startswith("Let a = 3")  # best word overlap
    assert back[1][1] == PROBLEM_NODE


def test_tree_graph_colours_and_overlay() -> None:
    tree = apples_tree()
    path = merge_paths(tree, PATH)
    graph = tree_graph(tree, list(path))
    parsed = parse_dot(graph.to_dot())
    assert set(parsed.nodes) == {n.id for n in tree.nodes}
    kinds = [kind for _, _, kind in parsed.edges]
    assert kinds.count("continue") == len(tree.nodes) - 1
    back = [(t, h) for t, h, kind in parsed.edges if kind == "backtrack"]
    assert back == [("0.1.0", "0"), ("0.0.0", "0.0")]
    assert all(is_ancestor(tree, head, tail) for tail, head in back)
    attrs = {n.id: n.attrs for n in graph.nodes}
    assert attrs["0.0.1.0"]["peripheries"] == "2"  # correct terminal
    assert attrs["0.1.0"]["color"] == "#d73027"  # wrong terminal
    assert attrs["0.0"]["fillcolor"] == q_colour(0.95, -1, 1)
    assert q_colour(-1, -1, 1) == "#f46d43" and q_colour(1, -1, 1) == "#66bd63"
    assert q_colour(0, -1, 1) == "#ffffbf"
    with pytest.raises(ValueError, match="not in tree"):
        tree_graph(tree, ["0", "9.9"])


def test_svg_and_png_are_real_pictures(tmp_path: Path) -> None:
    tree = apples_tree()
    graph = tree_graph(tree, list(merge_paths(tree, PATH)))
    svg = render(graph, tmp_path / "tree.svg")
    assert svg_counts(svg) == (len(tree.nodes), len(graph.edges))
    png = render(graph, tmp_path / "tree.png")
    width, height, raw = decode_png(png)
    assert width > 300 and height > 200
    assert len(set(raw)) > 16  # not a blank canvas
    dot = render(graph, tmp_path / "tree.dot")
    assert dot.read_text() == graph.to_dot()


def test_awkward_text_is_escaped(tmp_path: Path) -> None:
    text = 'He said "x\\y" \\n and \\boxed{3}; {braces} <tags> & more\n\nsecond'
    tree = SearchTree(
        "odd",
        'A "quoted" problem with \\frac{1}{2}',
        "3",
        [node("0", ""), node("0.0", text, terminal=True, answer='"3"', correct=True)],
    )
    graph = tree_graph(tree)
    assert len(parse_dot(graph.to_dot()).nodes) == 2
    assert svg_counts(render(graph, tmp_path / "odd.svg")) == (2, 1)
    assert svg_counts(render(trace_graph(text), tmp_path / "t.svg"))[0] == 3


def test_control_characters_from_a_model_render(tmp_path: Path) -> None:
    """Regression: a random model's step held NUL and other control bytes, which cut the DOT
    string short in Graphviz ("badly delimited number")."""
    text = "a\x00b\x01c\x17d\x7fe\tf"
    tree = SearchTree(
        "ctl", "p", "1", [node("0", ""), node("0.1", text), node("0.1.0", text + "\x00")]
    )
    graph = tree_graph(tree)
    assert "\x00" not in graph.to_dot()
    assert len(parse_dot(graph.to_dot()).nodes) == 3
    assert svg_counts(render(graph, tmp_path / "ctl.svg")) == (3, 2)


def test_render_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GraphRenderError, match="syntax error"):
        render("digraph { a -> ", tmp_path / "broken.svg")
    with pytest.raises(ValueError, match="unknown graph format 'pdf'"):
        render("digraph { a }", tmp_path / "x.pdf")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ASTRO_GRAPHVIZ", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(GraphRenderError, match="pip install graphviz-pure"):
        render("digraph { a }", tmp_path / "x.svg")
