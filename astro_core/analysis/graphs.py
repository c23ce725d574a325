"""Responses and search trees as directed graphs for reports, drawn with cloning's graphs.

A response is split into steps, reflections and backtracks by the same parser as traces
(`astro_core.cloning.graphs.trace_graph`); this module picks examples, renders them to SVG
and makes the SVG fit inline in an HTML page (no XML prolog, ids unique per graph).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from astro_core.cloning.graphs import Graph, render, trace_graph, tree_graph
from astro_core.cloning.phrases import Phrases
from astro_core.evaluation.samples import SampleRecord
from astro_core.trees import SearchTree

MAX_GRAPH_CHARS = 6000  # a longer response is drawn from its start (graphs stay readable)
MAX_TREE_NODES = 80
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)


def response_graph(text: str, phrases: Phrases | None = None, name: str = "response") -> Graph:
    """A response as a graph; a very long one is cut to its first MAX_GRAPH_CHARS."""
    if len(text) > MAX_GRAPH_CHARS:
        cut = text[:MAX_GRAPH_CHARS].rsplit("\n\n", 1)[0]
        name = f"{name} (first {len(cut)} of {len(text)} characters)"
        text = cut
    return trace_graph(text, phrases, name=name)


def svg_text(graph: Graph) -> str:
    """The graph as SVG markup."""
    with tempfile.TemporaryDirectory(prefix="astro-graph-") as folder:
        out = render(graph, Path(folder) / "graph.svg")
        return out.read_text(encoding="utf-8")


def inline_svg(svg: str, prefix: str) -> str:
    """SVG markup ready to sit inside HTML: no prolog, ids prefixed, scaled to its box."""
    body = _PROLOG.sub("", svg, count=1)
    body = re.sub(r'\bid="', f'id="{prefix}-', body)
    body = body.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    return body.replace("<svg ", '<svg class="graph" ', 1)


def pick_examples(samples: Iterable[SampleRecord]) -> dict[str, SampleRecord]:
    """The shortest correct response that backtracks, and the shortest wrong response
    (preferring one that backtracks): keys 'correct_with_backtrack', 'wrong'."""
    best: dict[str, SampleRecord] = {}
    wrong_backtracks = False
    for sample in samples:
        if sample.correct and sample.backtracks > 0:
            key = "correct_with_backtrack"
        elif not sample.correct:
            key = "wrong"
            if wrong_backtracks and sample.backtracks == 0:
                continue
            if sample.backtracks > 0 and not wrong_backtracks:
                wrong_backtracks = True
                best.pop(key, None)
        else:
            continue
        if key not in best or len(sample.response) < len(best[key].response):
            best[key] = sample
    return best


def pick_tree(trees: Iterable[SearchTree]) -> SearchTree | None:
    """A tree worth drawing: with correct and wrong terminals, the smallest under
    MAX_TREE_NODES nodes; else the smallest tree of all."""
    best: SearchTree | None = None
    best_key: tuple[int, int] | None = None
    for tree in trees:
        answers = {n.correct for n in tree.terminals()}
        mixed = True in answers and False in answers
        key = (0 if mixed and len(tree.nodes) <= MAX_TREE_NODES else 1, len(tree.nodes))
        if best_key is None or key < best_key:
            best, best_key = tree, key
    return best


def tree_svg(tree: SearchTree) -> str:
    return svg_text(tree_graph(tree))
