"""`astro train grpo` and `astro train select-prompts`: one summary line, and a one-line
error with the right exit code for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from astro_cli.main import app
from tests.training import toy

toy_policy_dir = toy.toy_policy_dir  # fixtures
toy_prompts = toy.toy_prompts
runner = CliRunner()


def astro(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, out: str, err: str, expected_code: int, text: str) -> None:
    assert code == expected_code, (code, out, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert text in lines[0], lines[0]


def grpo_args(model: Path | str, prompts: Path, out: Path) -> list[str]:
    return [
        "train",
        "grpo",
        "--preset",
        "cpu",
        "--model",
        str(model),
        "--dataset",
        str(prompts),
        "--output-dir",
        str(out),
    ]


def test_grpo_trains_and_prints_one_line(toy_policy_dir, toy_prompts, tmp_path) -> None:
    code, out, err = astro(
        *grpo_args(toy_policy_dir, toy_prompts, tmp_path / "run"),
        "--max-steps",
        "2",
        "--set",
        "max_completion_length=12",
    )
    assert code == 0, err
    assert out.strip().splitlines() == [out.strip()]
    assert out.startswith("grpo finished: 2 steps") and "checkpoint-2" in out
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in log if '"event": "log"' in line]
    assert [s["step"] for s in steps] == [1, 2]
    for key in (
        "loss",
        "reward_mean",
        "reward_std",
        "accuracy",
        "completion_length_mean",
        "backtracks_mean",
        "clip_ratio",
        "skipped_groups",
        "grad_norm",
        "learning_rate",
        "tokens_per_second",
        "policy_version",
    ):
        assert key in steps[0], key
    assert "kl" not in steps[0]  # beta 0: no reference model, no KL


def test_print_config_shows_the_grpo_fields(tmp_path: Path) -> None:
    config = tmp_path / "grpo.yaml"
    config.write_text(
        yaml.safe_dump(
            {"model": "m", "dataset": "d", "output_dir": "o", "beta": 0.04, "loss_type": "dapo"}
        )
    )
    code, out, err = astro(
        "train",
        "grpo",
        "--config",
        str(config),
        "--preset",
        "paper",
        "--num-generations",
        "8",
        "--set",
        "epsilon_high=0.28",
        "--print-config",
    )
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert (resolved["num_generations"], resolved["beta"], resolved["loss_type"]) == (
        8,
        0.04,
        "dapo",
    )
    assert resolved["epsilon_high"] == 0.28
    assert resolved["max_completion_length"] == 8192  # from the paper preset
    assert resolved["reward_correct"] == 1.0 and resolved["reward_incorrect"] == -1.0


@pytest.mark.parametrize(
    "extra, text",
    [
        (["--num-generations", "1"], "num_generations"),
        (["--set", "per_device_train_batch_size=6"], "multiple of num_generations"),
        (["--set", "loss_type=ppo"], "loss_type"),
        (["--set", "epsilon_high=0.1"], "epsilon_high (0.1) must be >= epsilon"),
        (["--set", "scale_rewards=max"], "scale_rewards"),
        (["--set", "reward_correct=-2"], "reward_correct must be greater"),
        (["--policy-sync", "nccl"], "policy_sync"),
    ],
)
def test_bad_grpo_settings_exit_2(extra: list[str], text: str, tmp_path: Path) -> None:
    code, out, err = astro(*grpo_args("m", tmp_path / "p.jsonl", tmp_path / "o"), *extra)
    one_line_error(code, out, err, 2, text)


def test_save_steps_off_the_batch_boundary_exit_2(toy_policy_dir, toy_prompts, tmp_path):
    code, out, err = astro(
        *grpo_args(toy_policy_dir, toy_prompts, tmp_path / "o"),
        "--set",
        "num_iterations=2",
        "--save-steps",
        "3",
    )
    one_line_error(code, out, err, 2, "multiple of num_iterations")


def test_bad_prompts_exit_1(toy_policy_dir, tmp_path: Path) -> None:
    code, out, err = astro(*grpo_args(toy_policy_dir, tmp_path / "none.jsonl", tmp_path / "o"))
    one_line_error(code, out, err, 1, "does not exist")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"problem": "x", "answer": "1"}\n{"problem": "y"}\n')
    code, out, err = astro(*grpo_args(toy_policy_dir, prompts, tmp_path / "o"))
    one_line_error(code, out, err, 1, "p.jsonl:2: field 'answer' is missing")
    prompts.write_text("\n")
    code, out, err = astro(*grpo_args(toy_policy_dir, prompts, tmp_path / "o"))
    one_line_error(code, out, err, 1, "holds no prompts")


def test_a_model_that_is_not_there_exits_1(toy_prompts, tmp_path: Path) -> None:
    code, out, err = astro(*grpo_args(tmp_path / "nothing", toy_prompts, tmp_path / "o"))
    one_line_error(code, out, err, 1, "does not exist")


def test_registry_sync_without_a_generator_exits_2(toy_policy_dir, toy_prompts, tmp_path):
    code, out, err = astro(
        *grpo_args(toy_policy_dir, toy_prompts, tmp_path / "o"), "--policy-sync", "registry"
    )
    one_line_error(code, out, err, 2, "needs the generator service")


def test_select_prompts_in_process(toy_policy_dir, toy_prompts, tmp_path: Path) -> None:
    out_file = tmp_path / "kept.jsonl"
    code, out, err = astro(
        "train",
        "select-prompts",
        "--model",
        str(toy_policy_dir),
        "--dataset",
        str(toy_prompts),
        "--output",
        str(out_file),
        "--num-samples",
        "4",
        "--max-completion-length",
        "12",
        "--set",
        "prompts_per_call=32",
    )
    assert code == 0, err
    kept = [json.loads(line) for line in out_file.read_text().splitlines()]
    rates = [json.loads(line) for line in Path(f"{out_file}.rates.jsonl").read_text().splitlines()]
    assert len(rates) == 64  # every prompt measured once
    assert all(0 < row["pass_rate"] < 1 and row["num_samples"] == 4 for row in kept)
    assert {row["id"] for row in kept} == {
        f"toy-{r['index']}" for r in rates if 0 < r["pass_rate"] < 1
    }
    assert out.strip() == (
        f"kept {len(kept)} of 64 prompts with pass rate in (0, 1): "
        f"{sum(r['pass_rate'] == 1 for r in rates)} too easy, "
        f"{sum(r['pass_rate'] == 0 for r in rates)} too hard; wrote {out_file}"
    )


@pytest.mark.parametrize(
    "extra, code_, text",
    [
        (["--low", "0.6", "--high", "0.5"], 2, "pass-rate interval"),
        (["--num-samples", "0"], 2, "num_samples"),
        (["--set", "colour=red"], 2, "colour"),
    ],
)
def test_bad_select_settings(extra, code_, text, tmp_path: Path) -> None:
    code, out, err = astro(
        "train", "select-prompts", "--dataset", "d", "--output", str(tmp_path / "k.jsonl"), *extra
    )
    one_line_error(code, out, err, code_, text)


def test_select_prompts_bad_input_exits_1(toy_policy_dir, toy_prompts, tmp_path) -> None:
    code, out, err = astro(
        "train",
        "select-prompts",
        "--dataset",
        str(tmp_path / "no.jsonl"),
        "--output",
        str(tmp_path / "k.jsonl"),
        "--model",
        str(toy_policy_dir),
    )
    one_line_error(code, out, err, 1, "does not exist")
    code, out, err = astro(
        "train",
        "select-prompts",
        "--dataset",
        str(toy_prompts),
        "--output",
        str(tmp_path / "k.jsonl"),
    )
    one_line_error(code, out, err, 1, "needs model")
