"""`astro demo` (what `make demo` runs): the tiny preset end to end through gRPC on loopback,
its usage errors, and the synthetic family it learns on (exact answers, held-out problems
kept out of every piece of training data the demo writes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from astro_core.synthetic import all_problems

RUN_LINE = re.compile(r"^\[3/4\] run (\S+) from (\S+):", re.MULTILINE)
PRODUCT = re.compile(r"x \* (\d+) = (\d+)\.")


def astro_demo(*args: str, timeout: float = 840) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "astro_cli.main", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def problem_key(text: str) -> tuple[int, int]:
    """(b, c) of a family problem's text: the problem itself, whatever its id."""
    match = PRODUCT.search(text)
    assert match, text
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One `astro demo --preset tiny` (its folder and result), shared by the tests below."""
    folder = tmp_path_factory.mktemp("demo")
    return folder, astro_demo("--preset", "tiny", "--data-dir", str(folder))


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 2 minutes on 2 idle cores; far more on a shared machine
def test_the_tiny_demo_runs_every_stage_through_the_runs_service(
    tiny_demo: tuple[Path, Any],
) -> None:
    import redis

    from services.coordinator.runs.store import RunStore
    from services.runtime.redis_store import connect_redis

    tmp_path, result = tiny_demo
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    match = RUN_LINE.search(out)
    assert match, out
    run_id, base_ref = match.groups()
    report = Path(re.findall(r"^report: (\S+)$", out, re.MULTILINE)[-1])
    assert report.is_file() and "astro demo" in report.read_text()
    assert re.search(r"demo finished in \d+ min \d+ s", out)
    # the warm start's accuracy on held-out problems and each checkpoint's are printed
    assert re.search(r"greedy \d+%, sampled \d+%, pass@2 \d+%", out)
    assert re.search(r"wrong guesses called wrong \d+%, right guesses called right \d+% ", out)
    for label in ("base", "sft", "grpo"):
        shares = r"(\d+%|-) / (\d+%|-)"  # back after wrong / right: the truth, its check
        row = rf"^ +{label} +\d+\.\d% +\d+\.\d\d +{shares} +{shares}$"
        assert re.search(row, out, re.MULTILINE), out
    # every stage's headline went by (the RunView of `astro run`, on stderr)
    for stage in ("search", "clone", "sft", "select_prompts", "grpo", "eval", "report"):
        assert re.search(rf"^{stage}: ", result.stderr, re.MULTILINE), result.stderr
    # a headline wider than 80 columns stays one line in a log (not broken mid-figure)
    eval_line = re.search(r"^eval: .*$", result.stderr, re.MULTILINE)
    assert eval_line and all(f"{c}.synth-" in eval_line.group(0) for c in ("base", "sft", "grpo"))

    # The platform is down; its Redis (append-only file in the data dir) holds the record.
    handle = connect_redis(url=None, directory=tmp_path / "redis")
    try:
        client = redis.Redis.from_url(handle.url, decode_responses=True)
        record = RunStore(client).get(run_id)
        assert record is not None and record.state == "succeeded", record
        stages = {s.name: s for s in record.stages}
        assert list(stages) == [
            "search", "clone", "sft", "select_prompts", "grpo", "eval", "report",
        ]  # fmt: skip
        assert all(s.state == "succeeded" for s in stages.values())
        artifacts = record.artifacts()
        # the base model and every trained checkpoint are registered
        name, _, version = base_ref.partition(":")
        assert client.exists(f"astro:reg:ckpt:{name}:{version}")
        for stage in ("sft", "grpo"):
            refs = artifacts[f"{stage}.checkpoints"].split(",")
            assert refs and artifacts[f"{stage}.checkpoint"] == refs[-1]
            for ref in refs:
                assert ref.startswith(f"run-{run_id}-{stage}:")
                assert client.exists(f"astro:reg:ckpt:{ref}"), ref
    finally:
        handle.close()

    out_dir = Path(record.output_dir)
    trees = read_jsonl(artifacts["search.trees"])
    assert len(trees) == 4 == stages["search"].metrics["trees"]
    assert stages["search"].metrics["trees_with_correct_and_incorrect"] >= 1
    traces = read_jsonl(artifacts["clone.traces"])
    assert len(traces) == stages["clone"].metrics["traces"] > 0
    prompts = read_jsonl(artifacts["select_prompts.prompts"])
    for label in ("base", "sft", "grpo"):
        summary = json.loads((Path(artifacts[f"eval.{label}"]) / "summary.json").read_text())
        ((name, bench),) = summary["benchmarks"].items()
        assert bench["problems"] == 3 and bench["samples"] == 6
        # where it goes back: shares of its wrong / right answers that a move back follows
        # (the eval stage's metrics are the summary's counts, which the report shows)
        for kind in ("wrong", "right", "called_wrong", "called_right"):
            rate = stages["eval"].metrics.get(f"{label}.{name}.back_after_{kind}")
            assert rate == bench["where_it_goes_back"][f"back_after_{kind}"]
            assert rate is None or 0.0 <= rate <= 1.0
            if label == "base" and bench["mean_backtracks"] == 0:
                assert not rate  # a model that never goes back goes back after nothing
    assert "## Where it goes back" in Path(artifacts["report.markdown"]).read_text()
    assert report == Path(artifacts["report.html"])
    for key, value in artifacts.items():
        for item in value.split(","):
            if item.startswith("/"):
                assert Path(item).exists() and Path(item).is_relative_to(out_dir), key

    # Held-out problems appear in no training data the demo wrote.
    (eval_file,) = (out_dir / "inputs" / "eval").glob("*.jsonl")
    heldout = {problem_key(p["problem"]) for p in read_jsonl(eval_file)}
    assert len(heldout) == 3
    warm = read_jsonl(tmp_path / "warm-start" / "warmup.jsonl")
    trained_on = [
        *(r["messages"][0]["content"] for r in warm if r["problem_id"].startswith("product/")),
        *(t["problem"] for t in trees),
        *(r["messages"][0]["content"] for r in traces),
        *(p["problem"] for p in prompts),
    ]
    assert len(trained_on) > len(warm) // 2
    assert not heldout & {problem_key(text) for text in trained_on}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_stops_every_service_and_child(tiny_demo: tuple[Path, Any]) -> None:
    """Ctrl-C while the run goes: exit 130, and no service or trainer process is left.
    (The same folder: the warm start is reused, so this goes straight to the platform.)"""
    import signal
    import time

    import psutil

    folder, _ = tiny_demo
    process = subprocess.Popen(
        [sys.executable, "-m", "astro_cli.main", "demo", "--preset", "tiny",
         "--data-dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[psutil.Process] = []
    try:
        for line in process.stdout:
            if line.startswith("[3/4] run "):
                break
        time.sleep(3)  # the search stage is under way
        seen = psutil.Process(process.pid).children(recursive=True)
        assert {"generator", "coordinator"} <= {_service(p) for p in seen}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(seen, timeout=10)
    assert not alive, alive


def _service(process: Any) -> str:
    try:
        command = process.cmdline()
    except Exception:  # it ended meanwhile
        return ""
    return command[command.index("serve") + 1] if "serve" in command else ""


def test_bad_options_exit_2_before_anything_starts(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    result = astro_demo("--preset", "huge", "--data-dir", str(fresh), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --preset: unknown preset 'huge'")
    assert len(result.stderr.splitlines()) == 1 and not fresh.exists()

    a_file = tmp_path / "file"
    a_file.write_text("")
    result = astro_demo("--data-dir", str(a_file), timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: --data-dir:")
    assert not (tmp_path / "redis").exists()


def test_family_answers_are_exact_by_an_independent_evaluator() -> None:
    """Every problem's answer is the unique positive root, found here by substituting each
    candidate into x * b = c read from the text; the verifier agrees, and refuses others."""
    from astro_core.answers import check
    from astro_core.protocols import VerifyItem

    problems = [p.to_problem() for p in all_problems()]
    assert len({problem_key(p.problem) for p in problems}) == len(problems)
    for problem in problems:
        b, c = problem_key(problem.problem)
        roots = [x for x in range(1, c + 1) if x * b == c]
        assert roots == [int(problem.answer)], problem
        right = check(VerifyItem(f"So x = {roots[0]}. \\boxed{{{roots[0]}}}", problem.answer))
        assert right.correct
        for wrong in (roots[0] - 1, roots[0] + 1):
            assert not check(VerifyItem(f"\\boxed{{{wrong}}}", problem.answer)).correct


def test_each_recipe_is_a_valid_run_on_disjoint_data() -> None:
    """Every section parses with its stage's config class; the run has every stage; it
    searches problems the warm start solved and evaluates on the held-out split only."""
    from astro_core.models.warm_start import warmup_problem_ids
    from astro_core.pipeline import plan
    from astro_core.pipeline.demo_recipe import DEMO_PRESETS
    from astro_core.pipeline.sections import parse_section
    from astro_core.synthetic import parse_synth_spec

    for recipe in DEMO_PRESETS.values():
        spec = recipe.run_spec("demo-warm-start:1")
        for stage, raw in spec.config.items():
            parse_section(stage, raw)
        assert [s.name for s in plan(spec)] == [
            "search", "clone", "sft", "select_prompts", "grpo", "eval", "report",
        ]  # fmt: skip
        searched = parse_synth_spec(spec.problems_path)
        assert searched.split == "train"
        assert {p.id for p in searched.problems()} <= set(warmup_problem_ids(recipe.warm_start))
        heldout = recipe.heldout_problems()
        assert [parse_synth_spec(b).split for b in spec.eval_benchmarks] == ["heldout"]
        assert len(heldout) == recipe.heldout_problems_n
        assert all(p.metadata["split"] == "heldout" for p in heldout)
