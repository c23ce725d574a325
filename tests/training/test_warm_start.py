"""warm_start_model: real SFT (DeepSpeed on CPU, in process) teaches a tiny model the family's
step format; the result loads, answers train problems in that format, and is reused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from astro_core.models.warm_start import (
    WARM_MICRO_BATCH,
    WarmStartConfig,
    check_verdicts,
    family_accuracy,
    warm_micro_batch,
    warm_start_model,
    warm_start_preset,
    warmup_problem_ids,
    write_warmup_records,
)
from astro_core.synthetic import sample_problems

# A try step and an answer step, e.g. "Try x = 4: 4 * 7 = 28 (need 35): wrong.\n\nSo x = 4. The
# final answer is \boxed{4}." (the tiny model's arithmetic may be wrong; its format is not).
STEPS = re.compile(
    r"Try x = \d+: \d+ \* \d+ = \d+ \(need \d+\): (?:right|wrong)\.\n\n"
    r"So x = \d+\. The final answer is \\boxed\{(\d+)\}\."
)


@pytest.mark.slow
def test_tiny_warm_start_writes_the_family_steps(tmp_path: Path) -> None:
    from astro_core.engines import EngineConfig, load_engine
    from astro_core.models.tiny import load_model
    from astro_core.prompts import problem_messages

    config = warm_start_preset("tiny")
    model_dir = warm_start_model(tmp_path / "warm", config)
    model, tokenizer = load_model(model_dir)
    assert model.config.hidden_size == config.hidden_size
    assert model.config.num_hidden_layers == config.num_hidden_layers

    problems = sample_problems(config.problems, config.problems_seed, "train")
    engine = load_engine(EngineConfig(model_path=str(model_dir)))
    try:
        prompts = [engine.chat_template().render(problem_messages(p.text())) for p in problems]
        outputs = engine.generate(prompts, max_tokens=96, temperature=0.0)
    finally:
        engine.close()
    assert all(STEPS.fullmatch(c.text.strip()) for c in outputs), [c.text for c in outputs]

    figures = family_accuracy(model_dir, [p.to_problem() for p in problems], samples=4)
    assert figures.problems == len(problems) and figures.samples == 4
    assert 0 < figures.greedy <= 1 and figures.pass_at_k >= figures.greedy - 1e-9

    # the same config on the same folder: the finished model, no training again
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert warm_start_model(tmp_path / "warm", config) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_check_verdicts_reads_the_verdict_the_model_was_taught(tmp_path: Path) -> None:
    """A model whose every guess was wrong (noise 1) has only ever written "wrong": the measure
    must find it calls wrong guesses wrong and right guesses wrong too, whatever the check."""
    config = warm_start_preset("tiny", noise=1.0)
    model_dir = warm_start_model(tmp_path / "warm", config)
    problems = sample_problems(4, 0, "heldout")
    verdicts = check_verdicts(model_dir, problems, spread=1)
    assert verdicts.checks == 3 * len(problems)  # x - 1, x, x + 1 (x >= 2 in the family)
    assert verdicts.on_wrong_guesses == 1.0 and verdicts.on_right_guesses == 0.0
    # near-certain "wrong" everywhere: the true verdict's probability is ~1 on the two wrong
    # guesses of each problem and ~0 on the right one
    assert verdicts.mean_probability == pytest.approx(2 / 3, abs=0.08)
    with pytest.raises(ValueError, match="at least one problem"):
        check_verdicts(model_dir, [])
    with pytest.raises(ValueError, match="spread must be >= 1"):
        check_verdicts(model_dir, problems, spread=0)


def test_records_solve_only_the_chosen_train_problems(tmp_path: Path) -> None:
    config = warm_start_preset("tiny", include_facts=False, copies=3)
    path = write_warmup_records(tmp_path / "warm.jsonl", config)
    records = [json.loads(line) for line in path.open()]
    ids = set(warmup_problem_ids(config))
    assert len(records) == 3 * config.problems
    assert {r["problem_id"] for r in records} == ids
    assert all(p.split == "train" for p in sample_problems(config.problems, 0, "train"))
    with_facts = write_warmup_records(tmp_path / "facts.jsonl", config.model_copy(
        update={"include_facts": True}
    ))  # fmt: skip
    facts = [json.loads(line) for line in with_facts.open()]
    assert any(str(r["problem_id"]).startswith("fact/") for r in facts)


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unknown warm-start preset 'huge'"):
        warm_start_preset("huge")
    with pytest.raises(ValidationError, match="family"):
        WarmStartConfig(family="sums")
    with pytest.raises(ValidationError, match="not a multiple of 5 heads"):
        WarmStartConfig(hidden_size=192, num_attention_heads=5)
    with pytest.raises(ValidationError, match="noise"):
        WarmStartConfig(noise=1.5)
    with pytest.raises(ValidationError, match="unknown_field|Extra inputs"):
        WarmStartConfig.model_validate({"unknown_field": 1})


@pytest.mark.parametrize(("batch", "micro"), [(64, 16), (40, 10), (16, 16), (7, 7), (17, 1)])
def test_warm_start_steps_are_whole_micro_batches(batch: int, micro: int) -> None:
    assert warm_micro_batch(batch) == micro
    assert micro <= WARM_MICRO_BATCH and batch % micro == 0
