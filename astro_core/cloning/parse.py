"""Parsing traces back: steps, reflections, verdicts and backtracks.

`split_trace` works on our own traces (exact phrases) and on any model output: with
`paraphrases=True` a sentence that matches one of the configurable `*_patterns` of
`Phrases` ("Let me go back to ...", "Let's start over.") counts too. `count_backtracks` is
what the RL analysis uses to relate backtracking to accuracy. `node_path_from_trace` maps a
trace written with `rewrite: keep` back onto its tree.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

from astro_core.cloning.phrases import DESCRIPTION, Phrases
from astro_core.cloning.verbalize import excerpt, split_paragraphs, step_paragraphs
from astro_core.trees import ROOT_ID, SearchTree

SegmentKind = Literal["step", "reflection", "unsure", "confident", "backtrack", "restart"]
GOING_BACK: tuple[SegmentKind, ...] = ("backtrack", "restart")
# When one sentence matches several kinds, the first of these wins.
PRIORITY: tuple[SegmentKind, ...] = ("restart", "backtrack", "unsure", "confident", "reflection")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_SENTENCE_START = re.compile(r"[.!?](?=\s)|\n")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str
    description: str | None = None  # a backtrack's "where we ..." part, when exact


def _exact_pattern(phrases: Phrases) -> re.Pattern[str]:
    before, after = phrases.backtrack.split(DESCRIPTION)
    backtrack = re.escape(before) + r"(?P<description>[^\n]*)" + re.escape(after)
    return re.compile(
        "|".join(
            [
                f"(?P<reflection>{re.escape(phrases.reflection)})",
                f"(?P<unsure>{re.escape(phrases.unsure)})",
                f"(?P<confident>{re.escape(phrases.confident)})",
                f"(?P<restart>{re.escape(phrases.restart)})",
                rf"(?P<backtrack>{backtrack})(?=[ \t]*(?:\n|$))",
            ]
        )
    )


def _paraphrase_patterns(phrases: Phrases) -> dict[SegmentKind, re.Pattern[str]]:
    lists: dict[SegmentKind, list[str]] = {
        "restart": phrases.restart_patterns,
        "backtrack": phrases.backtrack_patterns,
        "unsure": phrases.unsure_patterns,
        "confident": phrases.confident_patterns,
        "reflection": phrases.reflection_patterns,
    }
    return {
        kind: re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        for kind, patterns in lists.items()
        if patterns
    }


def _sentence_starts(text: str) -> list[int]:
    """Where sentences may start: 0 and the end of each boundary ('.', '!' or '?' before
    whitespace, or a newline), in order. Found once per text, so that locating the sentence
    of every match stays linear in the text (a response can hold thousands of matches)."""
    return [0] + [boundary.end() for boundary in _SENTENCE_START.finditer(text)]


def _sentence_span(text: str, start: int, end: int, starts: list[int]) -> tuple[int, int]:
    # The last boundary that ends at or before the match; a '.' right before the match only
    # counts when followed by whitespace inside the text before it (a newline always does).
    index = bisect_right(starts, start) - 1
    if index > 0 and starts[index] == start and text[start - 1] != "\n":
        index -= 1
    begin = starts[index]
    if text[end - 1 : end] in (".", "!", "?"):  # the match itself closes its sentence
        return begin, end
    stop = _SENTENCE_END.search(text, end)
    return begin, (stop.end() if stop else len(text))


def _split_free_text(text: str, patterns: dict[SegmentKind, re.Pattern[str]]) -> list[Segment]:
    """Text between exact phrases: steps, with paraphrased sentences cut out when asked."""
    spans: list[tuple[int, int]] = []
    starts = _sentence_starts(text) if patterns else []
    for pattern in patterns.values():
        for match in pattern.finditer(text):
            spans.append(_sentence_span(text, match.start(), match.end(), starts))
    merged: list[tuple[int, int]] = []
    for begin, stop in sorted(spans):
        if merged and begin < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((begin, stop))
    segments: list[Segment] = []
    cursor = 0
    for begin, stop in merged:
        segments += [Segment("step", p) for p in split_paragraphs(text[cursor:begin])]
        sentence = text[begin:stop].strip()
        kind = next(k for k in PRIORITY if k in patterns and patterns[k].search(sentence))
        segments.append(Segment(kind, sentence))
        cursor = stop
    segments += [Segment("step", p) for p in split_paragraphs(text[cursor:])]
    return segments


def split_trace(
    text: str, phrases: Phrases | None = None, paraphrases: bool = True
) -> list[Segment]:
    """A trace (or any model output) as segments in order."""
    phrases = phrases or Phrases()
    text = text.translate(_QUOTES)
    paraphrase = _paraphrase_patterns(phrases) if paraphrases else {}
    segments: list[Segment] = []
    cursor = 0
    for match in _exact_pattern(phrases).finditer(text):
        segments += _split_free_text(text[cursor : match.start()], paraphrase)
        if match.group("backtrack") is not None:
            segments.append(Segment("backtrack", match.group(0), match.group("description")))
        else:
            kind = next(k for k in PRIORITY if match.group(k) is not None)
            segments.append(Segment(kind, match.group(0)))
        cursor = match.end()
    segments += _split_free_text(text[cursor:], paraphrase)
    return segments


def count_backtracks(text: str, phrases: Phrases | None = None) -> int:
    """Backtracks and restarts in a text, paraphrases included."""
    return sum(s.kind in GOING_BACK for s in split_trace(text, phrases))


def count_reflections(text: str, phrases: Phrases | None = None) -> int:
    return sum(s.kind == "reflection" for s in split_trace(text, phrases))


def node_path_from_trace(text: str, tree: SearchTree, phrases: Phrases | None = None) -> list[str]:
    """The node sequence a `rewrite: keep` trace walks through `tree`.

    Raises ValueError naming the first paragraph or backtrack that does not fit the tree.
    """
    phrases = phrases or Phrases()
    index, children = tree.by_id(), tree.children()
    path = [ROOT_ID]
    pending: list[str] = []  # backtrack targets that share a description, settled by the next step
    steps: list[str] = []

    def walk_steps() -> None:
        position = 0
        while position < len(steps):
            found = None
            for start in pending or [path[-1]]:
                options = sorted(
                    ((c, step_paragraphs(tree, c, phrases)) for c in children[start]),
                    key=lambda pair: -len(pair[1]),
                )
                for child, paragraphs in options:
                    if steps[position : position + len(paragraphs)] == paragraphs:
                        found = (start, child.id, len(paragraphs))
                        break
                if found:
                    break
            if found is None:
                raise ValueError(f"step {steps[position][:60]!r} does not continue node {path[-1]}")
            if pending:
                path.append(found[0])
                pending.clear()
            path.append(found[1])
            position += found[2]
        steps.clear()

    for segment in split_trace(text, phrases, paraphrases=False):
        if segment.kind == "step":
            steps.append(segment.text)
            continue
        walk_steps()
        if segment.kind == "restart":
            path.append(ROOT_ID)
        elif segment.kind == "backtrack":
            ancestors = [n.id for n in tree.path_to(path[-1])[1:-1]]
            pending[:] = [
                a
                for a in ancestors
                if phrases.reference(excerpt(index[a].text)) == segment.description
            ]
            if not pending:
                raise ValueError(f"no step above {path[-1]} matches {segment.text!r}")
    walk_steps()
    if pending:
        raise ValueError(f"the trace ends right after going back ({segment.text!r})")
    return path
