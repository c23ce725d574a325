"""`astro clone` and `astro graph`: round trips, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.cloning.dataset import read_traces
from astro_core.cloning.parse import count_backtracks
from astro_core.trees import write_trees
from tests.cloning.graph_checks import decode_png, parse_dot, svg_counts
from tests.cloning.trees import apples_tree, hopeless_tree, lucky_tree, random_tree

runner = CliRunner()


@pytest.fixture
def trees_file(tmp_path: Path) -> Path:
    path = tmp_path / "trees.jsonl"
    write_trees(path, [apples_tree(), hopeless_tree(), lucky_tree(), random_tree(6)])
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_clone_round_trip(trees_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft" / "traces.jsonl"
    code, stdout, _ = invoke(
        "clone", "--trees", str(trees_file), "--out", str(out), "--k", "2",
        "--traces-per-problem", "3", "--seed", "4",
    )  # fmt: skip
    assert code == 0, stdout
    records = read_traces(out)
    summary = json.loads((tmp_path / "sft" / "traces.summary.json").read_text())
    assert summary["traces"] == len(records) and f"wrote {len(records)} astro traces" in stdout
    assert summary["trees_without_correct_terminal"] == 1 and summary["seed"] == 4
    assert "hopeless" not in {r.problem_id for r in records}
    assert all(r.backtracks == count_backtracks(r.trace) <= 2 for r in records)

    direct_out = tmp_path / "sft" / "direct.jsonl"
    code, _, _ = invoke(
        "clone", "--trees", str(trees_file), "--out", str(direct_out), "--style", "direct",
        "--seed", "4",
    )  # fmt: skip
    assert code == 0
    direct = read_traces(direct_out)
    assert Counter(r.problem_id for r in direct) == Counter(r.problem_id for r in records)
    assert all(r.backtracks == 0 and r.style == "direct" for r in direct)

    # the same seed gives the same file; another seed another one
    again = tmp_path / "again.jsonl"
    invoke("clone", "--trees", str(trees_file), "--out", str(again), "--seed", "4")
    assert again.read_text() == out.read_text()


def test_clone_with_a_config_file_and_tokenizer(
    trees_file: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = tmp_path / "cloning.yaml"
    config.write_text("traces_per_problem: 1\ndirect_traces_per_problem: 0\n")
    out = tmp_path / "t.jsonl"
    code, stdout, stderr = invoke(
        "clone", "--trees", str(trees_file), "--out", str(out), "--config", str(config),
        "--tokenizer", str(tiny_model_dir),
    )  # fmt: skip
    assert code == 0, stderr
    records = read_traces(out)
    assert Counter(r.problem_id for r in records) == {"apples": 1, "random-6": 1}
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["tokenizer"] == str(tiny_model_dir) and summary["mean_tokens"] > 0


def test_graph_round_trips(trees_file: Path, tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    assert invoke("clone", "--trees", str(trees_file), "--out", str(traces))[0] == 0
    records = read_traces(traces)
    line = next(i for i, r in enumerate(records, 1) if r.problem_id == "apples" and r.backtracks)

    code, stdout, _ = invoke(
        "graph", "--trace", f"{traces}:{line}", "--out", str(tmp_path / "t.svg")
    )
    assert code == 0 and "wrote" in stdout
    nodes, edges = svg_counts(tmp_path / "t.svg")
    assert nodes > 4 and edges >= nodes - 1

    code, _, _ = invoke("graph", "--tree", f"{trees_file}:1", "--out", str(tmp_path / "tree.png"))
    assert code == 0
    width, height, _ = decode_png(tmp_path / "tree.png")
    assert width > 300 and height > 200

    code, _, _ = invoke(
        "graph", "--tree", f"{trees_file}:1", "--trace", f"{traces}:{line}",
        "--out", str(tmp_path / "walk.dot"),
    )  # fmt: skip
    assert code == 0
    parsed = parse_dot((tmp_path / "walk.dot").read_text())
    assert set(parsed.nodes) == {n.id for n in apples_tree().nodes}
    backtracks = [e for e in parsed.edges if e[2] == "backtrack"]
    assert len(backtracks) == records[line - 1].backtracks

    model_output = tmp_path / "answer.txt"
    model_output.write_text("x = 1.\n\nLet me go back to the start. Let's start over.\n\nx = 2.")
    assert invoke("graph", "--trace", str(model_output), "--out", str(tmp_path / "o.svg"))[0] == 0
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"response": "x = 1.\n\nLet's restart."}) + "\n")
    assert invoke("graph", "--trace", str(samples), "--out", str(tmp_path / "s.svg"))[0] == 0


def one_line_error(code: int, stderr: str, expected: str) -> None:
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr


def test_clone_bad_input(trees_file: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out.jsonl")
    one_line_error(*invoke("clone", "--trees", str(tmp_path / "nope.jsonl"), "--out", out)[::2],
                   "trees file not found")  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text(trees_file.read_text().splitlines()[0] + "\n{not json\n")
    one_line_error(*invoke("clone", "--trees", str(broken), "--out", out)[::2], "broken.jsonl:2")
    one_line_error(
        *invoke("clone", "--trees", str(trees_file), "--out", out, "--style", "fancy")[::2],
        "--style must be astro or direct",
    )
    one_line_error(*invoke("clone", "--trees", str(trees_file), "--out", out, "--k", "0")[::2],
                   "k: Input should be greater than or equal to 1")  # fmt: skip
    llm = tmp_path / "llm.yaml"
    llm.write_text("rewrite: llm\n")
    one_line_error(
        *invoke("clone", "--trees", str(trees_file), "--out", out, "--config", str(llm))[::2],
        "needs a generator",
    )


def test_graph_bad_input(trees_file: Path, tmp_path: Path) -> None:
    svg = str(tmp_path / "g.svg")
    one_line_error(*invoke("graph", "--out", svg)[::2], "give --trace")
    one_line_error(*invoke("graph", "--tree", f"{trees_file}:9", "--out", svg)[::2], "no line 9")
    one_line_error(*invoke("graph", "--tree", str(trees_file), "--out", "g.pdf")[::2], "'pdf'")
    one_line_error(*invoke("graph", "--tree", "missing.jsonl", "--out", svg)[::2], "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n{"x": 1}\n')
    one_line_error(*invoke("graph", "--trace", f"{bad}:2", "--out", svg)[::2], "bad.jsonl:2")
    one_line_error(*invoke("graph", "--trace", f"{bad}:3", "--out", svg)[::2], "no trace found")
    one_line_error(*invoke("graph", "--tree", f"{bad}:1", "--out", svg)[::2], "not a valid tree")


def test_a_real_process_fails_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "astro_cli.main", "clone", "--trees", str(tmp_path / "x.jsonl"),
         "--out", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: trees file not found: {tmp_path / 'x.jsonl'}"
