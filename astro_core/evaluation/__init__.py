"""Evaluation on MATH-500, AMC 2023 and AIME 2024 (or any problems JSONL).

    summary = evaluate(["math500"], generator, verifier, EvalConfig(n=16), "out/eval")

`config` (EvalConfig: the protocol), `benchmarks` (files by name), `metrics` (avg@n, maj@n,
pass@k), `samples` (samples.jsonl, resumable), `summary` (scores and breakdowns, the printed
table), `runner` (`evaluate`: the loop through the Generator and Verifier seams).
"""

from astro_core.evaluation.benchmarks import (
    BENCHMARK_FILES,
    Benchmark,
    UnknownBenchmark,
    load_benchmark,
    shared_data_dir,
)
from astro_core.evaluation.config import EvalConfig, EvaluatedModel, ProblemFields
from astro_core.evaluation.metrics import majority_correct, pass_at_k
from astro_core.evaluation.runner import (
    EvalConflict,
    EvalProgress,
    check_output_dir,
    evaluate,
    problem_seed,
)
from astro_core.evaluation.samples import (
    SAMPLES_FILE,
    SUMMARY_FILE,
    SampleLog,
    SampleRecord,
    iter_samples,
)
from astro_core.evaluation.summary import format_table

__all__ = [
    "BENCHMARK_FILES",
    "Benchmark",
    "EvalConfig",
    "EvalConflict",
    "EvalProgress",
    "EvaluatedModel",
    "ProblemFields",
    "SAMPLES_FILE",
    "SUMMARY_FILE",
    "SampleLog",
    "SampleRecord",
    "UnknownBenchmark",
    "check_output_dir",
    "evaluate",
    "format_table",
    "iter_samples",
    "load_benchmark",
    "majority_correct",
    "pass_at_k",
    "problem_seed",
    "shared_data_dir",
]
