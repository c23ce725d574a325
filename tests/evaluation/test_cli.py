"""`astro eval`: in process, through the generator and verifier services, from the registry;
one-line errors for bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.evaluation import iter_samples
from services.generator.server import register as register_generator
from services.registry.client import RegistryClient
from services.registry.server import register as register_registry
from services.runtime.config import ServiceConfig
from services.runtime.redis_store import connect_redis
from services.testing import ServiceThread
from services.verifier.server import register as register_verifier
from tests.conftest import free_port

runner = CliRunner()
SMALL = ["--benchmarks", "aime24", "--limit", "2", "--n", "2", "--max-tokens", "8"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["eval", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def in_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-local")
    code, stdout, stderr = invoke("--model", str(tiny_model_dir), *SMALL, "--out", str(out))
    assert code == 0, stderr
    assert "aime24" in stdout and "avg@2" in stdout and "wrote" in stdout
    return out


@pytest.fixture(scope="module")
def services(tiny_model_dir: Path) -> Iterator[tuple[str, str]]:
    generator_config = ServiceConfig(
        port=0,
        metrics_port=None,
        grace_seconds=1,
        settings={"model": {"path": str(tiny_model_dir)}, "max_wait_ms": 20},
    )
    verifier_config = ServiceConfig(
        port=0, metrics_port=None, grace_seconds=1, settings={"workers": 1}
    )
    with (
        ServiceThread("generator", register_generator, generator_config) as generator,
        ServiceThread("verifier", register_verifier, verifier_config) as verifier,
    ):
        yield generator.address, verifier.address


def test_in_process_run_writes_the_protocol_and_model(
    in_process: Path, tiny_model_dir: Path
) -> None:
    summary = json.loads((in_process / "summary.json").read_text())
    assert summary["protocol"]["n"] == 2 and summary["protocol"]["max_tokens"] == 8
    assert summary["model"]["source"] == str(tiny_model_dir)
    assert summary["model"]["version"].startswith(tiny_model_dir.name + "#")
    result = summary["benchmarks"]["aime24"]
    assert result["problems"] == 2 and result["samples"] == 4
    samples = list(iter_samples(in_process / "samples.jsonl"))
    assert len(samples) == 4 and all(0 < s.tokens <= 8 for s in samples)


def test_through_the_services_draws_the_same_samples(
    services: tuple[str, str], in_process: Path, tmp_path: Path
) -> None:
    generator, verifier = services
    out = tmp_path / "remote"
    code, stdout, stderr = invoke(
        "--generator", generator, "--verifier", verifier, *SMALL, "--out", str(out)
    )
    assert code == 0, stderr
    local = {s.key: s for s in iter_samples(in_process / "samples.jsonl")}
    remote = {s.key: s for s in iter_samples(out / "samples.jsonl")}
    assert remote == local  # per-problem seeds: the same draws whoever batches them
    ours = json.loads((out / "summary.json").read_text())
    theirs = json.loads((in_process / "summary.json").read_text())
    assert ours["benchmarks"] == theirs["benchmarks"]
    assert ours["model"]["source"] == f"generator {generator}"


def test_a_registered_checkpoint_is_pulled_and_evaluated(
    tiny_model_dir: Path, tmp_path: Path, in_process: Path
) -> None:
    redis = connect_redis(url=None, directory=tmp_path / "redis")
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis.url,
        grace_seconds=0.5,
        settings={"artifact_root": str(tmp_path / "artifacts")},
    )
    try:
        with ServiceThread("registry", register_registry, config) as registry:
            with RegistryClient(registry.client_config()) as client:
                client.register("tiny", tiny_model_dir, aliases=["base"])
            out = tmp_path / "registered"
            code, _, stderr = invoke(
                "--model", "tiny@base", "--registry", registry.address, *SMALL, "--out", str(out)
            )
            assert code == 0, stderr
            summary = json.loads((out / "summary.json").read_text())
            assert summary["model"]["version"] == "tiny:1"
            # the same weights draw the same samples
            local = [s.response for s in iter_samples(in_process / "samples.jsonl")]
            assert [s.response for s in iter_samples(out / "samples.jsonl")] == local
            code, _, stderr = invoke(
                "--model", "tiny:7", "--registry", registry.address, *SMALL, "--out", str(out)
            )
            assert code == 1 and "no registered checkpoint tiny:7" in stderr
    finally:
        redis.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--benchmarks", "gsm8k"], 2, "error: unknown benchmark 'gsm8k'; choose from math500"),
        (["--n", "0"], 2, "error: invalid config: n: Input should be greater than or equal to 1"),
        (["--max-tokens", "40000"], 2, "max_tokens: Input should be less than or equal to 32768"),
        (["--temperature", "-1"], 2, "temperature"),
        (["--benchmarks", "aime24,aime24"], 2, "error: --benchmarks: aime24 listed twice"),
        (["--limit", "0"], 2, "limit: Input should be greater than or equal to 1"),
        (["--arm", "final"], 2, "error: --arm must be one of base, sft, rl"),
        (["--engine", "tpu"], 2, "error: --engine must be hf or vllm"),
        (["--model", "./no/such/dir"], 2, "error: --model: directory not found"),
        (["--model", "tiny:abc"], 2, "error: --model: version in 'tiny:abc'"),
        (["--config", "nonsense"], 2, "neither a file nor a preset (cpu, paper)"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    exit_code, _, stderr = invoke(*args, "--out", str(tmp_path / "out"))
    assert exit_code == code
    assert message in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unreachable_services_and_conflicts_are_one_line(
    in_process: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    code, _, stderr = invoke(
        "--model", "tiny:1", "--registry", closed, *SMALL, "--out", str(tmp_path / "x")
    )
    assert (
        code == 1
        and stderr.startswith("error: --model: cannot fetch tiny:1")
        and stderr.count("\n") == 1
    )
    code, _, stderr = invoke(
        "--model", str(tiny_model_dir), *SMALL[:-2], "--max-tokens", "9", "--out", str(in_process)
    )
    assert code == 1 and "max_tokens=8, this run has max_tokens=9" in stderr
    assert stderr.count("\n") == 1
