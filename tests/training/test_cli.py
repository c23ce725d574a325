"""`astro train sft`: one summary line on stdout, nothing compiled, and a one-line error with
the right exit code for every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.training.sft_config import SFTConfig
from tests.conftest import REPO, free_port

runner = CliRunner()


def astro(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, out: str, err: str, expected_code: int, text: str) -> None:
    assert code == expected_code, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert text in lines[0], lines[0]


@pytest.mark.slow
def test_a_run_prints_one_line_and_compiles_nothing(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    extensions = tmp_path / "torch-extensions"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env["TORCH_EXTENSIONS_DIR"] = str(extensions)  # where DeepSpeed would JIT-build ops
    env.pop("DS_ACCELERATOR", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "train",
            "sft",
            "--preset",
            "cpu",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(traces_file),
            "--output-dir",
            str(tmp_path / "out"),
            "--max-steps",
            "2",
            "--registry",
            str(tmp_path / "store"),
            "--output-name",
            "cli-sft",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"sft finished: 2 steps; loss {_last_loss(tmp_path / 'out'):.4f}; "
        f"checkpoint {tmp_path / 'out' / 'checkpoint-2'}; registered cli-sft:1"
    ]
    assert "sft step 2/2 loss=" in result.stderr  # progress lines (stderr is not a terminal)
    assert not extensions.exists() or not any(extensions.rglob("*"))


def _last_loss(out: Path) -> float:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return float([r for r in lines if r["event"] == "log"][-1]["loss"])


def test_print_config_resolves_preset_file_flags_and_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "dataset": "d", "output_dir": "o", "seed": 1}))
    code, out, err = astro(
        "train",
        "sft",
        "--config",
        str(path),
        "--preset",
        "cpu",
        "--seed",
        "5",
        "--zero-stage",
        "2",
        "--no-packing",
        "--set",
        "lora.r=4",
        "--print-config",
    )
    assert code == 0, err
    config = SFTConfig.model_validate(yaml.safe_load(out))
    assert (config.seed, config.deepspeed.zero_stage, config.packing) == (5, 2, False)
    assert config.lora is not None and config.lora.r == 4 and config.max_length == 512


@pytest.fixture
def job(tiny_model_dir: Path, traces_file: Path, tmp_path: Path) -> list[str]:
    return [
        "train",
        "sft",
        "--preset",
        "cpu",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(traces_file),
        "--output-dir",
        str(tmp_path / "out"),
    ]


def test_usage_errors_exit_2(job: list[str], tmp_path: Path) -> None:
    one_line_error(*astro(*job, "--learning-rate", "-1"), 2, "learning_rate")
    one_line_error(*astro(*job, "--zero-stage", "5"), 2, "deepspeed.zero_stage")
    one_line_error(*astro(*job, "--set", "lora.r"), 2, "KEY=VALUE")
    one_line_error(*astro(*job, "--preset", "gigantic"), 2, "unknown sft preset")
    one_line_error(*astro(*job, "--config", str(tmp_path / "no.yaml")), 2, "file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_length: 0\nmodel: m\ndataset: d\noutput_dir: o\n")
    one_line_error(*astro("train", "sft", "--config", str(bad)), 2, "max_length")
    one_line_error(*astro("train", "sft", "--output-dir", "o", "--dataset", "d"), 2, "model")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_line_error(*astro(*job, "--output-dir", str(a_file)), 2, "is not a directory")


def test_data_errors_exit_1(job: list[str], tmp_path: Path) -> None:
    one_line_error(*astro(*job, "--dataset", str(tmp_path / "none.jsonl")), 1, "dataset not found")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line_error(*astro(*job, "--dataset", str(empty)), 1, "holds no traces")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "x"}\n')
    one_line_error(*astro(*job, "--dataset", str(broken)), 1, f"{broken}:2: trace has no messages")


def test_model_errors_exit_1(job: list[str], tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import T5Config

    t5 = tmp_path / "t5"
    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2).save_pretrained(t5)
    one_line_error(*astro(*job, "--model", str(t5)), 1, "is not a causal language model")
    one_line_error(*astro(*job, "--model", str(tmp_path / "nope")), 1, "does not exist")
    store = tmp_path / "store"
    LocalCheckpointStore(store).register("tiny", tiny_model_dir)
    one_line_error(
        *astro(*job, "--model", "tiny:2", "--registry", str(store)), 1, "no registered checkpoint"
    )
    one_line_error(
        *astro(*job, "--model", "ghost@sft", "--registry", str(store)), 1, "no model named"
    )
    one_line_error(*astro(*job, "--model", "tiny@sft"), 1, "no registry_address is set")


@pytest.mark.slow
def test_an_unreachable_registry_exits_1(job: list[str]) -> None:
    code, out, err = astro(*job, "--model", "tiny@sft", "--registry", f"127.0.0.1:{free_port()}")
    one_line_error(code, out, err, 1, "UNAVAILABLE")
