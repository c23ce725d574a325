"""The experiment's statistics on inputs whose answers were worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from astro_core.analysis.experiment import (
    CheckpointScore,
    accuracy_table,
    analyse,
    backtrack_correlations,
    format_interval,
    mean_series,
    paired_difference,
    render_markdown,
    rl_curves,
    scores_from_summary,
    t_interval,
)

# Student t quantiles t_{0.975, df} from a printed table.
T975 = {2: 4.302653, 4: 2.776445}


def test_t_interval_of_one_to_five() -> None:
    # mean 3, s = sqrt(10 / 4), s / sqrt(5) = 0.707107, half width 2.776445 * 0.707107
    interval = t_interval([1, 2, 3, 4, 5])
    half = T975[4] * math.sqrt(2.5) / math.sqrt(5)
    assert interval.mean == 3
    assert interval.low == pytest.approx(3 - half, abs=1e-6)
    assert interval.high == pytest.approx(3 + half, abs=1e-6)
    assert half == pytest.approx(1.963243, abs=1e-6)
    assert interval.n == 5


def test_t_interval_of_one_value_has_no_width_and_bad_input_is_refused() -> None:
    single = t_interval([0.4])
    assert (single.mean, single.low, single.high, single.half_width) == (0.4, None, None, None)
    with pytest.raises(ValueError, match="no values"):
        t_interval([])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1, 2], confidence=1.0)


def test_paired_difference_is_the_interval_of_the_differences() -> None:
    # differences 0.1, 0.2, 0.1: mean 0.133333, s = 0.057735, s / sqrt(3) = 0.033333
    interval = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.6])
    assert interval.mean == pytest.approx(0.133333, abs=1e-6)
    assert interval.low == pytest.approx(0.133333 - T975[2] * 0.033333, abs=1e-5)
    assert interval.high == pytest.approx(0.276755, abs=1e-5)
    # unpaired, each arm's spread would hide the effect; paired, a constant shift has width 0
    shifted = paired_difference([0.1, 0.5, 0.9], [0.0, 0.4, 0.8])
    assert shifted.mean == pytest.approx(0.1)
    assert shifted.high == pytest.approx(0.1) and shifted.low == pytest.approx(0.1)
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_difference([1, 2, 3], [1, 2])


def score(seed: int, arm: str, stage: str, acc: float, bt: float = 0.0, step: int | None = None,
          tokens: float = 10.0) -> CheckpointScore:  # fmt: skip
    return CheckpointScore(seed, arm, stage, step, "heldout", acc, bt, tokens)


def two_seeds() -> list[CheckpointScore]:
    scores = []
    for seed, (a_sft, d_sft) in enumerate([(0.30, 0.25), (0.40, 0.30)]):
        scores.append(score(seed, "base", "base", 0.2))
        scores.append(score(seed, "astro", "sft", a_sft, bt=1.0))
        scores.append(score(seed, "direct", "sft", d_sft))
        # RL checkpoints at steps 1 and 2; the last one is the arm's RL result
        scores.append(score(seed, "astro", "rl", a_sft + 0.05, bt=1.0 + seed, step=1))
        scores.append(score(seed, "astro", "rl", a_sft + 0.10, bt=2.0 + seed, step=2, tokens=30))
        scores.append(score(seed, "direct", "rl", d_sft + 0.02, step=1))
        scores.append(score(seed, "direct", "rl", d_sft + 0.04, step=2))
    return scores


def test_accuracy_table_pairs_arms_by_seed_and_takes_the_last_rl_step() -> None:
    rows = {row.stage: row for row in accuracy_table(two_seeds())}
    assert list(rows) == ["base", "sft", "rl"]
    assert rows["base"].astro.mean == rows["base"].direct.mean == pytest.approx(0.2)
    assert rows["base"].difference.mean == 0
    rl = rows["rl"]
    assert rl.seeds == [0, 1]
    assert rl.astro.mean == pytest.approx((0.40 + 0.50) / 2)
    assert rl.direct.mean == pytest.approx((0.29 + 0.34) / 2)
    # differences 0.11 and 0.16: mean 0.135, s = 0.035355, half = 12.706205 * 0.025
    assert rl.difference.mean == pytest.approx(0.135)
    assert rl.difference.high - rl.difference.mean == pytest.approx(12.706205 * 0.025, abs=1e-5)


def test_a_seed_missing_one_arm_is_left_out_of_the_pairs() -> None:
    scores = [s for s in two_seeds() if not (s.seed == 1 and s.arm == "direct")]
    rl = next(row for row in accuracy_table(scores) if row.stage == "rl")
    assert rl.seeds == [0] and rl.astro.mean == pytest.approx(0.40)


def test_rl_curves_start_at_sft_and_average_over_seeds() -> None:
    curves = rl_curves(two_seeds())["heldout"]
    astro = curves["astro"]
    assert [p.step for p in astro] == [0, 1, 2]
    assert [p.seeds for p in astro] == [2, 2, 2]
    assert astro[0].accuracy.mean == pytest.approx(0.35)
    assert astro[2].backtracks.mean == pytest.approx(2.5)
    assert astro[2].tokens.mean == pytest.approx(30)
    assert curves["direct"][1].accuracy.mean == pytest.approx((0.27 + 0.32) / 2)


def test_backtrack_correlation_across_rl_checkpoints() -> None:
    # ASTRO RL points (backtracks, accuracy): (1, .35) (2, .40) (2, .45) (3, .50)
    # dx = -1, 0, 0, 1; dy = -.075, -.025, .025, .075: sxy = .15, sxx = 2, syy = .0125
    # r = .15 / sqrt(.025) = 0.948683; t = r sqrt(2 / (1 - r^2)) = 4.242641, df 2: p = 0.051317
    result = backtrack_correlations(two_seeds())["heldout"]
    assert result["astro"].r == pytest.approx(0.948683, abs=1e-6)
    assert result["astro"].p == pytest.approx(0.051317, abs=1e-5)
    assert result["astro"].n == 4
    assert result["direct"].r is None and "constant" in result["direct"].reason
    assert result["both"].n == 8


def test_pearson_on_a_textbook_series() -> None:
    # xs 1..5, ys 2 4 5 4 5: sxy 6, sxx 10, syy 6, r = 6 / sqrt(60); t = 2.12132, df 3
    scores = [
        score(0, "astro", "rl", y, bt=x, step=x)
        for x, y in zip([1, 2, 3, 4, 5], [2, 4, 5, 4, 5], strict=True)
    ]
    c = backtrack_correlations(scores)["heldout"]["astro"]
    assert c.r == pytest.approx(0.774597, abs=1e-6)
    assert c.p == pytest.approx(0.124027, abs=1e-6)


def test_scores_from_a_summary_map_eval_arms() -> None:
    summary = {
        "model": {"label": "direct_grpo-step4", "arm": "direct_rl", "step": 4},
        "benchmarks": {"heldout": {"accuracy": 0.5, "mean_backtracks": 0.25, "mean_tokens": 40}},
    }
    (s,) = scores_from_summary(summary, seed=3)
    assert (s.seed, s.arm, s.stage, s.step, s.accuracy, s.backtracks, s.tokens) == (
        3, "direct", "rl", 4, 0.5, 0.25, 40.0
    )  # fmt: skip
    summary["model"] = {"label": "x", "arm": "teacher"}
    with pytest.raises(ValueError, match="unknown arm 'teacher'"):
        scores_from_summary(summary, seed=0)


def test_mean_series_averages_train_logs_by_step() -> None:
    assert mean_series([([1, 2], [10.0, 20.0]), ([1], [30.0])]) == [[1, 20.0, 2.0], [2, 20.0, 1.0]]


def test_report_shows_table_ratio_and_correlation() -> None:
    result = analyse("unit", two_seeds())
    assert result.rl_ratio() == pytest.approx(0.45 / 0.315)
    text = render_markdown(result)
    rl_line = next(line for line in text.splitlines() if line.startswith("| heldout | rl |"))
    assert format_interval(result.table[2].astro) in rl_line
    assert "+13.5 [" in rl_line
    assert "r = +0.949, p = 0.0513 (n = 4)" in text
    data = result.to_dict()
    assert data["table"][2]["difference"]["mean"] == pytest.approx(0.135)
    assert data["correlations"]["heldout"]["direct"]["r"] is None


def test_a_checkpoint_event_keeps_its_steps_metrics(tmp_path: Path) -> None:
    from astro_core.analysis.trainlog import read_train_log

    log = tmp_path / "train_log.jsonl"
    log.write_text(
        '{"event": "log", "step": 1, "reward_mean": -0.5, "completion_length_mean": 40}\n'
        '{"event": "checkpoint", "step": 1, "path": "/x/checkpoint-1"}\n'
        '{"event": "log", "step": 2, "reward_mean": 0.25, "completion_length_mean": 44}\n'
    )
    assert read_train_log(log).series("reward") == ([1.0, 2.0], [-0.5, 0.25])
