"""Procedure cloning end to end: trees in, SFT traces (JSONL chat messages) and a summary out.

One trace a line:

    {"messages": [{"role": "user", "content": problem + instruction},
                  {"role": "assistant", "content": trace}],
     "problem_id", "style": "astro"|"direct", "k", "backtracks", "node_path"}

The summary counts traces per problem, mean characters and tokens, the histogram of
backtracks per trace, and the trees that gave no trace (no correct terminal, or none that
passed the self-evaluation vote).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from astro_core.cloning.config import CloningConfig, Style
from astro_core.cloning.direct import direct_linearizations
from astro_core.cloning.linearize import (
    Linearization,
    count_moves_back,
    is_ancestor,
    sample_linearizations,
    terminal_pools,
)
from astro_core.cloning.rewrite import family_rewrites, llm_rewrites
from astro_core.cloning.self_eval import passing_terminals
from astro_core.cloning.verbalize import Rewrites, verbalize
from astro_core.prompts import ChatTemplate, problem_messages
from astro_core.protocols import Generator
from astro_core.trees import SearchTree

TokenCounter = Callable[[str], int]
Outcome = Literal["traced", "no_correct_terminal", "rejected_by_self_eval"]


@dataclass
class TraceRecord:
    messages: list[dict[str, str]]
    problem_id: str
    style: Style
    k: int
    backtracks: int
    node_path: list[str]

    @property
    def trace(self) -> str:
        return self.messages[-1]["content"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages or "content" not in messages[-1]:
            raise ValueError("messages must be a non-empty list of {role, content}")
        style = data["style"]
        if style not in ("astro", "direct"):
            raise ValueError(f"style must be astro or direct, not {style!r}")
        return cls(
            messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
            problem_id=str(data["problem_id"]),
            style=style,
            k=int(data["k"]),
            backtracks=int(data["backtracks"]),
            node_path=[str(n) for n in data["node_path"]],
        )


@dataclass
class CloneResult:
    records: list[TraceRecord]
    summary: dict[str, Any]


def approximate_tokens(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free stand-in, named so in the summary."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def clone_tree(
    tree: SearchTree,
    config: CloningConfig,
    style: Style = "astro",
    generator: Generator | None = None,
    template: ChatTemplate | None = None,
) -> tuple[list[TraceRecord], Outcome]:
    """The traces of one tree, and why there are none when there are none."""
    pools = terminal_pools(tree)
    if not pools.correct:
        return [], "no_correct_terminal"
    correct = pools.correct
    if generator is not None and config.self_eval:
        correct = passing_terminals(tree, correct, generator, config, template)
        if not correct:
            return [], "rejected_by_self_eval"
    linearizations: list[Linearization] = sample_linearizations(tree, config, correct)
    if style == "direct":
        linearizations = direct_linearizations(tree, linearizations)
    rewrites: Rewrites | None = None
    if config.rewrite == "family":
        rewrites = family_rewrites(tree, {n for lin in linearizations for n in lin.node_path})
    elif config.rewrite == "llm":
        if generator is None:
            raise ValueError("rewrite: llm needs a generator")
        steps = {node for lin in linearizations for node in lin.node_path}
        targets = {
            b
            for lin in linearizations
            for a, b in zip(lin.node_path, lin.node_path[1:], strict=False)
            if is_ancestor(tree, b, a)
        }
        rewrites = llm_rewrites(tree, steps, targets, generator, config)
    records = []
    for lin in linearizations:
        trace = verbalize(
            tree,
            lin.node_path,
            config.phrases,
            style=style,
            high_q_threshold=config.high_q_threshold,
            rewrites=rewrites,
        )
        messages = problem_messages(tree.problem) + [{"role": "assistant", "content": trace}]
        records.append(
            TraceRecord(
                messages=messages,
                problem_id=tree.problem_id,
                style=style,
                k=lin.k,
                backtracks=count_moves_back(tree, lin.node_path),
                node_path=list(lin.node_path),
            )
        )
    return records, "traced"


def clone_trees(
    trees: Iterable[SearchTree],
    config: CloningConfig,
    style: Style = "astro",
    generator: Generator | None = None,
    template: ChatTemplate | None = None,
    count_tokens: TokenCounter | None = None,
    tokenizer_name: str = "approximate (words and punctuation)",
    on_tree: Callable[[SearchTree, int], None] | None = None,
) -> CloneResult:
    """Clone every tree; `on_tree(tree, n_traces)` reports progress."""
    records: list[TraceRecord] = []
    outcomes: dict[str, Outcome] = {}
    without_wrong: list[str] = []
    for tree in trees:
        mine, outcome = clone_tree(tree, config, style, generator, template)
        records.extend(mine)
        outcomes[tree.problem_id] = outcome
        if not terminal_pools(tree).wrong:
            without_wrong.append(tree.problem_id)
        if on_tree is not None:
            on_tree(tree, len(mine))
    counter = count_tokens or approximate_tokens
    summary = summarize(records, outcomes, without_wrong, counter, tokenizer_name)
    summary.update(style=style, seed=config.seed, k=config.k)
    return CloneResult(records, summary)


def summarize(
    records: list[TraceRecord],
    outcomes: dict[str, Outcome],
    without_wrong: list[str],
    count_tokens: TokenCounter,
    tokenizer_name: str,
) -> dict[str, Any]:
    per_problem = Counter(r.problem_id for r in records)
    traced = [p for p, o in outcomes.items() if o == "traced"]
    texts = [r.trace for r in records]

    def mean(values: list[int]) -> float:
        return round(sum(values) / len(values), 2) if values else 0.0

    def histogram(values: Iterable[int]) -> dict[str, int]:
        return {str(key): count for key, count in sorted(Counter(values).items())}

    no_correct = [p for p, o in outcomes.items() if o == "no_correct_terminal"]
    rejected = [p for p, o in outcomes.items() if o == "rejected_by_self_eval"]
    return {
        "trees": len(outcomes),
        "trees_traced": len(traced),
        "trees_without_correct_terminal": len(no_correct),
        "trees_rejected_by_self_eval": len(rejected),
        "trees_without_wrong_terminal": len(without_wrong),
        "problems_without_trace": sorted(no_correct + rejected),
        "traces": len(records),
        "traces_per_problem": {
            "mean": mean([per_problem[p] for p in traced]),
            "histogram": histogram(per_problem[p] for p in traced),
        },
        "mean_chars": mean([len(t) for t in texts]),
        "mean_tokens": mean([count_tokens(t) for t in texts]),
        "tokenizer": tokenizer_name,
        "backtracks_histogram": histogram(r.backtracks for r in records),
        "k_histogram": histogram(r.k for r in records),
    }


def write_traces(path: str | Path, records: Iterable[TraceRecord]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")


def read_traces(path: str | Path) -> list[TraceRecord]:
    records = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(TraceRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a valid trace: {exc}") from exc
    return records


def summary_path(out: str | Path) -> Path:
    """Where the summary of a traces file goes: traces.jsonl -> traces.summary.json."""
    return Path(out).with_suffix(".summary.json")


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
