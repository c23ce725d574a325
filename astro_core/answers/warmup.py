"""Warm the LaTeX parser before workers fork.

latex2sympy2_extended's ANTLR parser learns its prediction tables (a DFA cache shared by the
process) as it parses; cold, it is about 2x slower. The pool's forkserver imports this module
once, and every worker it forks starts with the warm tables (copy-on-write) and with
ANTLR's two-stage (SLL, then LL) prediction installed (`parse.install_two_stage_parsing`).
"""

from __future__ import annotations

from astro_core.answers.parse import _latex_value, install_two_stage_parsing, parse_answer

SAMPLES = [
    r"\frac{1}{2}",
    r"-\frac{10}{9}",
    r"\dfrac{3}{56}",
    r"\frac{\sqrt{3}}{2}",
    r"3\sqrt{13}",
    r"\sqrt[3]{2}",
    r"2\sqrt{2}-1",
    r"\frac{9}{4}\pi",
    r"4\pi",
    r"\pi^2",
    r"e^{2}",
    "0.5",
    "-3.25",
    "1000",
    "025",
    r"10^{6}",
    r"2^{10}-1",
    r"x^2+2x+1",
    r"(x+1)^2",
    r"\frac{x+2}{7}",
    r"2x+4y-3=0",
    r"y=-\frac{1}{2}x+\frac{3}{4}",
    "x=3",
    r"x \geq 5",
    r"x < 3",
    r"-2 \le x \le 7",
    r"(1, 2)",
    r"(3, \frac{\pi}{2})",
    r"[0, 1)",
    r"(-\infty, -3] \cup [2, \infty)",
    r"\{1, 2, 3\}",
    r"1 \pm \sqrt{19}",
    r"-2, 1",
    r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
    r"\begin{pmatrix} -1 \\ 2 \\ 5 \end{pmatrix}",
    r"90^\circ",
    r"28\%",
    r"\text{Evelyn}",
    r"\text{(B)}",
    r"15\mbox{ cm}^2",
    r"\sin \frac{\pi}{6}",
    r"\cos^2 x",
    r"\tan^2(y)+1",
    r"\log_2 8",
    r"\ln 2",
    r"a_{37}=19",
    r"f(x)=x^2",
    r"|x-1|",
    r"\frac{1}{2004!}",
    r"\binom{5}{2}",
    r"204_5",
    r"\frac{5\sqrt{42}}{27}",
    r"\left( \frac{4}{3}, -\frac{1}{3} \right)",
    r"6 - 5i",
    r"\frac{\pi r}{h+r}",
    r"2 \sin b \cos a",
    r"\sqrt{2}+\sqrt{5}",
    r"x \in [-2,7]",
    r"k \ge 2",
    r"\frac{1}{12}",
    r"\$16386.17",
    r"11,\!111",
    r"-\frac{\sqrt{7}}{4}",
    r"\infty",
]


def warm() -> None:
    install_two_stage_parsing()
    for sample in SAMPLES:
        try:
            parse_answer(sample)
        except Exception:  # warming must never stop the pool from starting
            pass
    # Keep the parser's learned tables, drop the cached answers (workers do not need them).
    parse_answer.cache_clear()
    _latex_value.cache_clear()


warm()
