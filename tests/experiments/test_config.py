"""ExperimentConfig, the RunSpec each seed gets, the plan's direct_grpo:all, CLI usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from astro_core.config import ConfigError
from astro_core.experiments.config import load_experiment_config, preset_names
from astro_core.experiments.driver import run_spec
from astro_core.pipeline.plan import plan
from astro_core.pipeline.sections import parse_section
from astro_core.pipeline.spec import RunSpecError


def test_every_preset_loads_and_its_sections_parse() -> None:
    assert preset_names() == ["cpu", "gpu", "mini"]
    for name in preset_names():
        config = load_experiment_config(preset=name)
        spec = run_spec(config, seed=7, base_model="/models/m")
        for stage, section in spec.config.items():
            parse_section(stage, section)  # raises RunSpecError naming a bad field


LEVERS = sorted((Path(__file__).resolve().parents[2] / "docs" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", LEVERS, ids=[p.stem for p in LEVERS])
def test_every_documented_lever_loads_over_the_cpu_preset(path: Path) -> None:
    """docs/experiments.md tells readers to rerun these: they must still load and parse."""
    config = load_experiment_config(path, preset="cpu")
    assert config.name != load_experiment_config(preset="cpu").name  # its own output name
    spec = run_spec(config, seed=0, base_model="/models/m")
    for stage, section in spec.config.items():
        parse_section(stage, section)


def test_the_positive_reflection_lever_leaves_no_intermediate_step_confident() -> None:
    path = next(p for p in LEVERS if p.stem == "lever-positive-reflections")
    clone = run_spec(load_experiment_config(path, preset="cpu"), 0, "/m").config["clone"]
    model, _ = parse_section("clone", clone)
    assert model.high_q_threshold > 1.0  # type: ignore[attr-defined]  # Q never exceeds 1


def test_a_seed_runs_both_arms_with_the_seed_everywhere() -> None:
    config = load_experiment_config(preset="cpu")
    spec = run_spec(config, seed=7, base_model="/models/m")
    assert spec.direct_control
    assert spec.eval_checkpoints == ["base", "sft", "grpo:all", "direct_sft", "direct_grpo:all"]
    assert spec.problems_path == "synth:product?n=24&seed=7&split=train"
    assert spec.eval_benchmarks == ["synth:product?seed=0&split=heldout"]  # the same every seed
    for stage in ("search", "clone", "sft", "grpo", "eval"):
        assert spec.config[stage]["seed"] == 7
    assert "select_prompts" not in spec.config  # not a stage of the cpu preset
    other = run_spec(config, seed=8, base_model="/models/m")
    assert other.eval_benchmarks == spec.eval_benchmarks
    assert other.config["sft"] == {**spec.config["sft"], "seed": 8}


def test_the_plan_evaluates_every_rl_checkpoint_of_both_arms() -> None:
    spec = run_spec(load_experiment_config(preset="mini"), seed=0, base_model="/m")
    (evaluation,) = [s for s in plan(spec) if s.name == "eval"]
    assert evaluation.inputs == {
        "checkpoint.base": "input.base_model",
        "checkpoint.sft": "sft.checkpoint",
        "checkpoint.grpo:all": "grpo.checkpoints",
        "checkpoint.direct_sft": "sft_direct.checkpoint",
        "checkpoint.direct_grpo:all": "grpo_direct.checkpoints",
    }
    spec.direct_control = False
    with pytest.raises(
        RunSpecError, match=r"eval_checkpoints\[3\]: direct_sft needs direct_control"
    ):
        plan(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: []", "seeds"),
        ("seeds: [1, 1]", "seeds must be distinct"),
        ("stages: [search, clone, sft, eval]", "must include grpo"),
        ("seed: 3", "seed: Extra inputs are not permitted"),
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_experiment_config(path, preset="mini")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose from cpu, gpu, mini"):
        load_experiment_config(preset="huge")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --config FILE or --preset"),
        (["--preset", "huge"], "--preset: unknown preset 'huge'"),
        (["--config", "/nonexistent.yaml"], "--config: no file at /nonexistent.yaml"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from astro_cli.main import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["experiment", "astro-vs-direct", "--out", str(out), *args])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}")
    assert not out.exists()  # nothing written before the config is good
