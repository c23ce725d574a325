"""Analysis of evaluations: search behaviour in responses, trends across checkpoints, reports.

`behaviours` counts reflections and backtracks with cloning's phrase set, `stats` has the
Pearson test, `runs` reads eval directories and relates backtracks to accuracy across
checkpoints, `trainlog` reads the trainer's per-step log, `graphs` draws responses, and
`report.build_report` writes report.html, report.md and the plots.
"""

# behaviours first: the evaluation package, which report.py reaches, imports it back.
from astro_core.analysis.behaviours import BehaviourCounts, count_behaviours
from astro_core.analysis.report import Report, build_report
from astro_core.analysis.stats import Correlation, pearson

__all__ = [
    "BehaviourCounts",
    "Correlation",
    "Report",
    "build_report",
    "count_behaviours",
    "pearson",
]
