"""Find the final answer in a model response: the last \\boxed{} / \\fbox{}, then a
"final answer is ..." form, then a configurable fallback.

Everything here is linear-time string scanning (no regex backtracking over nested braces), so a
1 MB response or 10,000 nested braces cost milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Fallback = Literal["none", "last_math", "latex", "last_number"]
Source = Literal["boxed", "final_answer", "fallback", "whole", "none"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# Text between two boxes that still makes them one answer: "\boxed{1} and \boxed{2}",
# "\boxed{(3,3)} \text{ for part (a) and } \boxed{(1,1)}", "\boxed{1},\boxed{2}".
_MAX_BOX_GAP = 40
_PUNCTUATION_GAP = re.compile(r"^(?:[^\w\\]|\\quad|\\qquad|\\[()\[\],;!]|\\(?=\\|$))*$")
_MATH_SPAN = re.compile(
    r"\$\$(?P<dd>[^$]{1,2000}?)\$\$"
    r"|\\\[(?P<br>.{1,2000}?)\\\]"
    r"|\\\((?P<pa>.{1,2000}?)\\\)"
    r"|(?<![\\\d])\$(?P<d>(?:\\\$|[^$\n]){1,2000}?)(?<!\\)\$",
    re.DOTALL,
)
# LaTeX spans only, the inline ones on one line (math-verify's LatexExtractionConfig).
_LATEX_SPAN = re.compile(
    r"\$\$(?P<dd>[^$]{1,2000}?)\$\$"
    r"|\\\[(?P<br>.{1,2000}?)\\\]"
    r"|\\\((?P<pa>[^\n]{1,2000}?)\\\)"
    r"|(?<![\\\d])\$(?P<d>(?:\\\$|[^$\n]){1,2000}?)(?<!\\)\$",
    re.DOTALL,
)
_NUMBER = re.compile(
    r"(?<![\w.,])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])%?"  # thousands: 12,000,023
    r"|(?<![\w.,])-?\d{1,3}(?: \d{3})+(?![\d,.])%?"  # thousands with spaces: 1 000
    r"|(?<![\w.,])-?\d+,\d+(?![\d,])%?"  # decimal comma: 2,74
    r"|(?<![\w.])-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?%?"
    r"|(?<![\w\d])-?\.\d+%?"
)
_FINAL_ANSWER = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*(?P<answer>.+?)"
    r"(?=\.\s|\.?\s*$|\n|\.?\s*I\s+hope|\s+<\|)",
    re.IGNORECASE | re.DOTALL,
)
_SHORT_ANSWER_CHARS = 400
# Unit words after a number ("5 cm^2", "5cm", "12 square units"): the number is the answer.
# Only words of two letters or more, so "5m" or "5 m" (perhaps a variable) stay.
_UNIT = (
    r"(?:square|sq\.?|cubic|cu\.?)?\s*(?:cm|mm|km|in|inch|inches|ft|feet|foot|yd|yards?|miles?"
    r"|mi|meters?|metres?|units?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?"
    r"|months?|years?|cents?|dollars?|degrees?|pounds?|lbs?|ounces?|oz|kg|grams?|liters?"
    r"|litres?|gallons?|mph|kmh|people|students|ways|points|men|women|children|digits?|edges?"
    r"|tiles?|coins?|apples?|marbles?|pieces?|rounds?|acres?|hectares?|rupees?|cubes?)"
)
NUMBER_WITH_UNIT = re.compile(r"(?P<number>-?[\d.,]*\d)\s*" + _UNIT + r"(?:\s*\^\s*\{?[23]\}?)?")
# The same words after any answer: `12\pi square units`, `6\sqrt{2} cm`, `\frac12 hour`.
TRAILING_UNIT = re.compile(r"(?<=[\w}])\s+" + _UNIT + r"(?:\s*\^\s*\{?[23]\}?)?$")


@dataclass(frozen=True)
class Extraction:
    """The answer found in a text and where it came from ("" when none)."""

    answer: str
    source: Source


def strip_emphasis(text: str) -> str:
    """Drop markdown bold/italic markers: `**73**` -> `73`, `__x__` -> `x`, `*73*` -> `73`."""
    text = text.replace("**", "")
    text = re.sub(r"(?<![\w\\])__(?=\S)(.+?)(?<=\S)__(?!\w)", r"\1", text)
    return re.sub(r"(?<![\w*\\^])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])", r"\1", text)


def group_end(text: str, open_at: int) -> int | None:
    """Index just past the brace that closes the `{` at `open_at`; \\{ and \\} do not count."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """Every \\boxed / \\fbox in `text` as (start, end, content), in order.

    An unclosed box takes the rest of the text; `\\boxed 5` (no braces) takes one token.
    """
    boxes: list[tuple[int, int, str]] = []
    pos = 0
    while True:
        starts = [(text.find(cmd, pos), cmd) for cmd in _BOX_COMMANDS]
        found = [(s, cmd) for s, cmd in starts if s >= 0]
        if not found:
            return boxes
        start, cmd = min(found)
        i = start + len(cmd)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = group_end(text, i)
            if end is None:
                boxes.append((start, len(text), text[i + 1 :]))
                return boxes
            boxes.append((start, end, text[i + 1 : end - 1]))
            pos = end
        elif i > start + len(cmd) and i < len(text):  # "\boxed 5"
            match = re.match(r"[^\s$.,]+", text[i:])
            token = match.group(0) if match else ""
            boxes.append((start, i + len(token), token))
            pos = i + len(token)
        else:
            pos = i


def _joined_with_previous(gap: str) -> bool:
    if len(gap) > _MAX_BOX_GAP:
        return False
    plain = re.sub(r"\\text\{([^{}]*)\}", r" \1 ", gap)
    return bool(_PUNCTUATION_GAP.match(gap)) or re.search(r"\band\b", plain) is not None


def last_boxed(text: str) -> str | None:
    """Content of the last box; boxes right before it joined by "and" or commas are kept
    too, as one comma-separated answer (`\\boxed{1} and \\boxed{2}` -> `1, 2`)."""
    boxes = find_boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _joined_with_previous(text[box[1] : group[0][0]]):
            break
        group.insert(0, box)
    return ", ".join(_unboxed(content.strip()) for _, _, content in group)


def _unboxed(content: str) -> str:
    """`\\boxed{\\boxed{B}}` boxes `B`: a box that is all of a box's content is dropped."""
    for _ in range(10):
        inner = find_boxes(content)
        if len(inner) != 1 or inner[0][0] != 0 or inner[0][1] != len(content):
            break
        content = inner[0][2].strip()
    return content


# Math spans joined into one answer: "$x=1$ or $x=-2$", "$1$, $2$, and $3$" (at most 6).
_SPAN_JOINER = re.compile(r"\s*(?:,?\s*(?:and|or)|,)\s*", re.IGNORECASE)
_MAX_JOINED_SPANS = 6


def _last_spans(text: str, pattern: re.Pattern[str]) -> tuple[int, str] | None:
    """(end, content) of the last non-empty math span; spans right before it that only
    ",", "and" or "or" separate are joined to it: "$x=1$ or $x=-2$" -> "x=1, x=-2"."""
    spans = [
        (m.start(), m.end(), next(g for g in m.groups() if g is not None).strip())
        for m in pattern.finditer(text)
    ]
    spans = [span for span in spans if span[2]]
    if not spans:
        return None
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        if len(group) == _MAX_JOINED_SPANS or not _SPAN_JOINER.fullmatch(
            text[span[1] : group[0][0]]
        ):
            break
        group.insert(0, span)
    return group[-1][1], ", ".join(content for _, _, content in group)


def _last_math_or_number(text: str) -> str | None:
    best = _last_spans(text, _MATH_SPAN)
    for match in _NUMBER.finditer(text):
        if best is None or match.end() > best[0]:
            best = (match.end(), match.group(0))
    return best[1] if best else None


def _last_latex(text: str) -> str | None:
    found = _last_spans(text, _LATEX_SPAN)
    return found[1] if found else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _unquote(s: str) -> str:
    """Drop quotes around an answer, also escaped ones: \\"$12$\\" -> $12$."""
    return re.sub(r"^\\?[\"'`]+|\\?[\"'`]+$", "", s.strip()).strip()


def _final_answer(text: str) -> tuple[int, str] | None:
    """(start position, answer) of the last "final answer is X" / "answer: X"; the
    position is -1 for the weak forms ("answer: X"), which never override a box."""
    matches = list(_FINAL_ANSWER.finditer(text))
    if not matches:
        return None
    answer = _unquote(matches[-1].group("answer").strip())
    if len(answer) > _SHORT_ANSWER_CHARS:
        return None
    # "Final Answer: The largest $n$ is 34" -> "34"
    if re.search(r"\s(?:is|are|was|equals)\s", answer) and not answer.startswith("$"):
        answer = _unquote(re.split(r"\s(?:is|are|was|equals)\s", answer)[-1])
    end = matches[-1].start() if matches[-1].group(0).lower().startswith("final") else -1
    spans = [next(g for g in m.groups() if g is not None) for m in _MATH_SPAN.finditer(answer)]
    if spans:
        if len(spans) > 1 and re.fullmatch(r"(?:\s*\$[^$]*\$\s*(?:,|and|or)?\s*)+", answer):
            return end, ", ".join(s.strip() for s in spans)
        return end, spans[0].strip()  # "the answer is $3$, not $7$": the first
    if re.fullmatch(r"[\w\s]+", answer) and re.search(r"\d", answer):
        number = _last_number(answer)  # "Jane started growing Sphere 3 hours ago"
        return (end, number) if number else None
    answer = answer.strip(" \"'`")
    return (end, answer) if answer else None


# Words in a formula that are not prose: environment names and short \text{} units.
_NOT_PROSE = re.compile(
    r"\\(?:begin|end)\s*\{[a-zA-Z*]+\}|\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]{0,20}\}"
)
# "Monday", "(B)", "no solution", "(E) none of these"
_BARE_TEXT = re.compile(r"(?:\(?[A-Ea-e]\)\s+)?\(?[A-Za-z][A-Za-z'\- ]{0,40}\)?\.?")


def _looks_like_bare_math(text: str) -> bool:
    """A short response that is only an answer: "\\frac{10}{9}", "x = 3",
    "\\begin{pmatrix}1\\\\2\\end{pmatrix}"."""
    if len(text) > 200 or "\n" in text.strip():
        return False
    words = re.sub(r"\\[a-zA-Z]+", " ", _NOT_PROSE.sub(" ", text))
    # Digits, LaTeX, an operator between letters ("x+y") or Unicode mathematics ("π", "√2").
    math = re.search(r"[\d\\+\-*/^=<>|π√∞½¼¾≤≥]", text)
    return re.search(r"[a-zA-Z]{2,}", words) is None and math is not None


def _is_math_with_unit(text: str) -> bool:
    """`5 cm^2`, `12\\pi square units`: an answer followed by unit words."""
    text = text.strip().rstrip(".")
    without_unit = TRAILING_UNIT.sub("", text)
    return without_unit != text and _looks_like_bare_math(without_unit)


def _looks_like_bare_text(text: str) -> bool:
    """A response that is only a short word answer: "Monday", "C", "(B)", "no solution"
    (at most 6 words, no digits or LaTeX)."""
    stripped = text.strip()
    return bool(_BARE_TEXT.fullmatch(stripped)) and len(stripped.split()) <= 6


def extract_answer(text: str, fallback: Fallback = "last_math") -> Extraction:
    """The final answer in a model response.

    Order: the last box (with boxes joined to it by "and"/commas) or the last
    "final answer is X" / "answer: X", whichever comes later; then a response that is only
    an answer ("\\frac{10}{9}", "Monday", "C"); then `fallback`: "last_math" (the last
    $...$, \\(...\\), \\[...\\] span or number, whichever comes last), "latex" (the last
    math span, inline ones on one line), "last_number", or "none".
    """
    boxes = find_boxes(text)
    plain = strip_emphasis(text)
    final = _final_answer(plain)
    # A box wins unless a "Final answer: X" comes after it (positions in `plain` are at
    # most those in `text`, as stripping emphasis only removes characters).
    if boxes and (final is None or final[0] < boxes[-1][1]):
        return Extraction(last_boxed(text) or "", "boxed")
    if final is not None:
        return Extraction(final[1], "final_answer")
    if _looks_like_bare_math(plain) or _looks_like_bare_text(plain) or _is_math_with_unit(plain):
        return Extraction(plain.strip().rstrip("."), "whole")
    found = None
    if fallback == "last_math":
        found = _last_math_or_number(plain)
    elif fallback == "latex":
        found = _last_latex(plain)
    elif fallback == "last_number":
        found = _last_number(plain)
    if found:
        return Extraction(found, "fallback")
    return Extraction("", "none")


def extract_gold(gold: str) -> Extraction:
    """A gold answer is usually bare ("\\frac{1}{2}", "025"); a full reference solution gives
    its last box or final-answer form."""
    stripped = gold.strip()
    if "\\boxed" in stripped or "\\fbox" in stripped:
        return extract_answer(stripped, fallback="none")
    if len(stripped) > _SHORT_ANSWER_CHARS or re.search(r"final answer", stripped, re.I):
        found = extract_answer(stripped)
        if found.answer:
            return found
    return Extraction(stripped, "whole")
