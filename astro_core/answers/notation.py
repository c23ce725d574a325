"""Number notations the LaTeX parser does not read, rewritten into ones it does.

- repeating decimals: `0.\\overline{3}`, `0.1\\overline{6}`, `1.\\overline{27}`, `0.\\bar{3}`,
  `0.\\dot{3}`, `0.\\dot{1}4285\\dot{7}` become the exact fraction (`\\frac{1}{3}`); a repetend
  needs a decimal point before it (a bare `\\overline{ab}` is a digit string, left alone);
- scientific e-notation: `5e-4`, `1.2E+3` become `5\\times10^{-4}`, `1.2\\times10^{3}`
  (a number standing alone; inside an exponent `2e-1` stays 2e - 1);
- spellings of the imaginary unit: `\\mathrm{i}`, `\\text{i}`, `\\mathit{i}`, `\\imath`
  become `i` (`parse` reads a free `i` as the imaginary unit); an upright `\\mathrm{e}` is
  Euler's number `e`;
- a root of one token without braces: `\\sqrt[3]2` becomes `\\sqrt[3]{2}`;
- Unicode mathematics as models write it: `π`, `∞`, `√2`, `√(x+1)`, `½`, `2½`, `x²`, `−`,
  `×`, `·`, `≤`, `≥`, `≠` become their LaTeX.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

_REPEATING = re.compile(
    r"(?<![\d.])(?P<sign>-?)(?P<whole>\d{0,30})\.(?P<fixed>\d{0,30})"
    r"(?:\\overline|\\bar)\s*(?:\{\s*(?P<rep>\d{1,30})\s*\}|(?P<rep1>\d))"
)
# 0.\dot{3} (one repeating digit) and 0.\dot{1}4285\dot{7} (dots on the first and last).
_DOTTED = re.compile(
    r"(?<![\d.])(?P<sign>-?)(?P<whole>\d{0,30})\.(?P<fixed>\d{0,30})"
    r"\\dot\s*\{\s*(?P<first>\d)\s*\}(?:(?P<middle>\d{0,30})\\dot\s*\{\s*(?P<last>\d)\s*\})?"
)
# A number standing alone (not inside an exponent or a name: `x^{2e-1}` is 2e - 1).
_E_NOTATION = re.compile(
    r"(?<![\w.\\^{}])(?P<mantissa>\d+(?:\.\d+)?)[eE](?P<exponent>[+-]?\d{1,4})(?![\w.}^])"
)
_IMAGINARY = re.compile(r"\\(?:mathrm|mathit|text|textit)\s*\{\s*i\s*\}|\\imath(?![a-zA-Z])")
_EULER = re.compile(r"\\(?:mathrm|text)\s*\{\s*e\s*\}")
_ROOT_TOKEN = re.compile(
    r"\\sqrt\s*\[\s*(?P<index>\d{1,3})\s*\]\s*(?P<token>\d|[a-zA-Z](?![a-zA-Z]))"
)


_SYMBOLS = {
    "π": "\\pi ",
    "∞": "\\infty ",
    "−": "-",
    "–": "-",
    "×": "\\times ",
    "·": "\\cdot ",
    "÷": "\\div ",
    "≤": "\\le ",
    "≥": "\\ge ",
    "≠": "\\ne ",
    "∪": "\\cup ",
    "∩": "\\cap ",
    "±": "\\pm ",
}
_SUPERSCRIPTS = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6"}
_SUPERSCRIPTS |= {"⁷": "7", "⁸": "8", "⁹": "9", "⁻": "-"}
_SUPERSCRIPT_RUN = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_VULGAR_FRACTION = re.compile("[\u00bc-\u00be\u2150-\u215e]")
_ROOT = re.compile(
    r"√\s*(?:\{(?P<braced>[^{}]{1,200})\}|\((?P<paren>[^()]{1,200})\)"
    r"|(?P<atom>\d+(?:\.\d+)?|[a-zA-Z]|\\pi))"
)


def _unicode_math(text: str) -> str:
    for symbol, latex in _SYMBOLS.items():
        text = text.replace(symbol, latex)
    text = _SUPERSCRIPT_RUN.sub(
        lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group(0)) + "}", text
    )
    text = _VULGAR_FRACTION.sub(lambda m: _vulgar(m.group(0)), text)
    return _ROOT.sub(lambda m: "\\sqrt{" + (m["braced"] or m["paren"] or m["atom"]) + "}", text)


def _vulgar(character: str) -> str:
    """`½` -> `\\frac{1}{2}` (NFKC spells it 1⁄2)."""
    numerator, _, denominator = unicodedata.normalize("NFKC", character).partition("\u2044")
    return f"\\frac{{{numerator}}}{{{denominator}}}"


def repeating_value(sign: str, whole: str, fixed: str, repetend: str) -> Fraction:
    """The exact value of sign whole.fixed(repetend repeated)."""
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(repetend), 10 ** len(fixed) * (10 ** len(repetend) - 1))
    return -value if sign == "-" else value


def _latex(value: Fraction, followed_by_power: bool) -> str:
    if value.denominator == 1:
        text = str(value.numerator)
    else:
        sign = "-" if value < 0 else ""
        text = f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"
    return f"({text})" if followed_by_power and value.denominator != 1 else text


def _followed_by_power(text: str, end: int) -> bool:
    return text[end:].lstrip().startswith("^")


def rewrite_notation(text: str) -> str:
    """`text` with the notations above rewritten; anything else unchanged."""
    if not text.isascii():
        text = _unicode_math(text)
    if "\\overline" in text or "\\bar" in text:
        text = _REPEATING.sub(
            lambda m: _latex(
                repeating_value(m["sign"], m["whole"], m["fixed"], m["rep"] or m["rep1"]),
                _followed_by_power(m.string, m.end()),
            ),
            text,
        )
    if "\\dot" in text:
        text = _DOTTED.sub(
            lambda m: _latex(
                repeating_value(
                    m["sign"],
                    m["whole"],
                    m["fixed"],
                    m["first"] + (m["middle"] or "") + (m["last"] or "")
                    if m["last"]
                    else m["first"],
                ),
                _followed_by_power(m.string, m.end()),
            ),
            text,
        )
    if "e" in text or "E" in text:
        text = _E_NOTATION.sub(
            lambda m: f"{m['mantissa']}\\times10^{{{m['exponent'].lstrip('+')}}}", text
        )
    if "i" in text:
        text = _IMAGINARY.sub("i", text)
    if "e" in text:
        text = _EULER.sub("e", text)
    if "\\sqrt" in text:
        text = _ROOT_TOKEN.sub(r"\\sqrt[\g<index>]{\g<token>}", text)
    return text
