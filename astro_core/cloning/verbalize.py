"""Verbalization: a node sequence becomes one chain of thought in natural language.

- A move to a child writes that child's step (kept verbatim, or an LLM rewrite).
- A move to an ancestor (a backtrack) writes the reflection question, the "not sure" verdict
  and "Let's go back to where we <what that step did>." or, at the root, the restart phrase.
- In the `astro` style a positive reflection ("... Our solution seems to be correct so far.")
  follows every intermediate step whose Q reaches `high_q_threshold`, and the final step.
- A terminal step always shows its answer in `\\boxed{}`.
The `direct` style (the Direct-CoT control) writes the steps only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from astro_core.cloning.config import Style
from astro_core.cloning.linearize import is_ancestor
from astro_core.cloning.phrases import Phrases
from astro_core.trees import ROOT_ID, SearchTree, TreeNode

PARAGRAPH_BREAK = "\n\n"
EXCERPT_CHARS = 60


@dataclass(frozen=True)
class Rewrites:
    """Per node id: replacement step text, and what a backtrack says the step did."""

    texts: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]


def step_paragraphs(
    tree: SearchTree, node: TreeNode, phrases: Phrases, text: str | None = None
) -> list[str]:
    """The paragraphs written for one node (a rollout node may hold several steps)."""
    text = node.text if text is None else text
    paragraphs = split_paragraphs(text)
    if node.terminal and "\\boxed" not in text:
        answer = node.answer if node.answer is not None else (tree.gold if node.correct else None)
        if answer:
            paragraphs.append(phrases.answer_sentence(answer))
    return paragraphs


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first line of a step, whitespace collapsed, cut at a word boundary."""
    first = next((line for line in text.strip().splitlines() if line.strip()), "")
    first = " ".join(first.split()).replace('"', "'")
    if len(first) <= limit:
        return first.rstrip(".")
    cut = first[:limit].rsplit(" ", 1)[0]
    return cut + "..."


def backtrack_sentence(
    tree: SearchTree, target: str, phrases: Phrases, rewrites: Rewrites | None = None
) -> str:
    if target == ROOT_ID:
        return phrases.restart
    text = (rewrites.texts.get(target) if rewrites else None) or tree.by_id()[target].text
    description = (rewrites.descriptions.get(target) if rewrites else None) or phrases.reference(
        excerpt(text)
    )
    return phrases.backtrack_to(description)


def verbalize(
    tree: SearchTree,
    node_path: Sequence[str],
    phrases: Phrases,
    *,
    style: Style = "astro",
    high_q_threshold: float = 0.9,
    rewrites: Rewrites | None = None,
) -> str:
    """The trace text of one node sequence (see the module docstring)."""
    if not node_path or node_path[0] != ROOT_ID:
        raise ValueError("a node path starts at the root")
    index = tree.by_id()
    blocks: list[str] = []
    last = len(node_path) - 1
    for position in range(1, len(node_path)):
        before, node = node_path[position - 1], index[node_path[position]]
        if is_ancestor(tree, node.id, before):
            if style == "direct":
                raise ValueError(f"a direct trace cannot go back ({before} -> {node.id})")
            blocks.append(
                phrases.negative_reflection(backtrack_sentence(tree, node.id, phrases, rewrites))
            )
            continue
        if node.parent != before:
            raise ValueError(f"{node.id} is neither a child nor an ancestor of {before}")
        text = rewrites.texts.get(node.id) if rewrites else None
        blocks.extend(step_paragraphs(tree, node, phrases, text))
        if style == "astro":
            final = position == last
            confident_step = node.kind == "step" and not node.terminal
            if final or (confident_step and node.q >= high_q_threshold):
                blocks.append(phrases.positive_reflection())
    return PARAGRAPH_BREAK.join(blocks)
