"""Self-evaluation and LLM rewrites against the real generator service (tiny model, loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.cloning.dataset import read_traces
from astro_core.cloning.parse import count_backtracks
from astro_core.trees import write_trees
from services.generator.server import register
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from tests.cloning.trees import apples_tree, lucky_tree
from tests.conftest import free_port

runner = CliRunner()


@pytest.fixture(scope="module")
def generator_address(tiny_model_dir: Path) -> Iterator[str]:
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        grace_seconds=1,
        settings={"model": {"path": str(tiny_model_dir)}, "max_wait_ms": 20},
    )
    with ServiceThread("generator", register, config) as service:
        yield service.address


def clone(tmp_path: Path, address: str, yaml: str, name: str) -> tuple[int, str, Path]:
    trees = tmp_path / "trees.jsonl"
    write_trees(trees, [apples_tree(), lucky_tree()])
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml)
    out = tmp_path / f"{name}.jsonl"
    result = runner.invoke(
        app,
        ["clone", "--trees", str(trees), "--out", str(out), "--config", str(config),
         "--generator", address],
    )  # fmt: skip
    return result.exit_code, result.stderr, out


def test_llm_rewrites_through_the_generator_service(tmp_path: Path, generator_address: str) -> None:
    code, stderr, out = clone(
        tmp_path,
        generator_address,
        "self_eval_votes: 2\nself_eval_threshold: 0.0\nrewrite: llm\nrewrite_max_tokens: 6\n",
        "llm",
    )
    assert code == 0, stderr
    records = read_traces(out)
    assert {r.problem_id for r in records} == {"apples", "lucky"}
    kept = apples_tree().by_id()
    for record in records:
        assert count_backtracks(record.trace) >= record.backtracks  # the tiny model may add some
        assert "\\boxed" in record.trace
        if record.problem_id == "apples":
            # the random tiny model's rewrites replace the step texts
            steps = [kept[n].text for n in record.node_path[1:]]
            assert not all(step in record.trace for step in steps)


def test_self_eval_vote_through_the_generator_service(
    tmp_path: Path, generator_address: str
) -> None:
    # A random model never answers "Yes" twice in a row, so a strict vote rejects every tree.
    code, stderr, out = clone(
        tmp_path, generator_address, "self_eval_votes: 2\nself_eval_threshold: 1.0\n", "strict"
    )
    assert code == 0, stderr
    assert read_traces(out) == []
    summary = out.with_suffix(".summary.json").read_text()
    assert '"trees_rejected_by_self_eval": 2' in summary


def test_unreachable_generator_is_one_line_error(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    code, stderr, out = clone(tmp_path, address, "self_eval_votes: 2\n", "down")
    assert code == 1 and not out.exists()
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: generator at ") and "UNAVAILABLE" in line
