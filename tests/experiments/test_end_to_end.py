"""`astro experiment astro-vs-direct --preset mini` end to end: the CLI starts the local
platform (every service a child process, a real Redis, trainers as child processes with
DeepSpeed on CPU), warm-starts the family model, runs each seed through the Runs service and
writes the report; then stops every process it started. The datasets the runs wrote show that
the two arms differ in trace style only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from astro_core.cloning.dataset import read_traces
from tests.conftest import REPO

# A few minutes on 2 shared cores: the warm start, then four trainer processes and the evals.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def experiment(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("experiment")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "astro_cli.main", "experiment", "astro-vs-direct",
               "--preset", "mini", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    return out, done


def test_the_mini_preset_writes_the_report(
    experiment: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, done = experiment
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0]
    rows = {row["stage"]: row for row in report["table"]}
    assert list(rows) == ["base", "sft", "rl"]
    for row in rows.values():
        assert row["seeds"] == [0]
        for arm in ("astro", "direct"):
            assert 0.0 <= row[arm]["mean"] <= 1.0
            assert row[arm]["low"] is None  # one seed: a mean, no interval
        difference = row["difference"]["mean"]
        assert difference == pytest.approx(row["astro"]["mean"] - row["direct"]["mean"])
    # every RL checkpoint of each arm was evaluated (mini saves at steps 1 and 2), the accuracy
    # in the table is the seed's evaluation of the last one
    scores = report["scores"]
    for arm, label in (("astro", "grpo"), ("direct", "direct_grpo")):
        rl = {s["step"]: s for s in scores if s["stage"] == "rl" and s["arm"] == arm}
        assert sorted(rl) == [1, 2]
        assert [rl[1]["label"], rl[2]["label"]] == [f"{label}-step1", f"{label}-step2"]
        assert rows["rl"][arm]["mean"] == rl[2]["accuracy"]
    (curves,) = report["curves"].values()
    assert [p["step"] for p in curves["astro"]] == [0, 1, 2]
    (correlations,) = report["correlations"].values()
    assert correlations["astro"]["n"] == 2 and correlations["both"]["n"] == 4
    assert report["train_curves"]["reward"]["astro"][0][0] == 1  # the GRPO log, from step 1
    markdown = (out / "report.md").read_text()
    assert "| benchmark | stage | ASTRO | Direct | ASTRO - Direct | seeds |" in markdown
    assert (out / "accuracy.png").stat().st_size > 0
    assert (out / "rl_curves.png").stat().st_size > 0
    assert "ASTRO-RL / Direct-RL accuracy" in done.stdout


def test_the_platform_is_stopped(experiment: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, done = experiment
    assert "starting the local platform" in done.stdout
    assert not (out / "platform" / "up.json").exists()  # removed by a clean stop
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out) in (proc / "cmdline").read_text():
                left.append(proc.name)
        except OSError:
            continue
    assert not left, f"processes of the experiment still running: {left}"


def test_both_arms_train_on_the_same_trees_in_another_style(
    experiment: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = experiment
    for seed in (0,):
        run = json.loads((out / f"seed-{seed}" / "run.json").read_text())
        artifacts = run["outcome"]["artifacts"]
        astro = read_traces(artifacts["clone.traces"])
        direct = read_traces(artifacts["clone.direct_traces"])
        trees = {json.loads(line)["problem_id"] for line in Path(artifacts["search.trees"]).open()}
        # the same problems (all from the one trees file), the same number of examples each
        assert astro and len(astro) == len(direct)
        assert Counter(r.problem_id for r in astro) == Counter(r.problem_id for r in direct)
        assert {r.problem_id for r in astro} <= trees
        for a, d in zip(astro, direct, strict=True):
            assert a.problem_id == d.problem_id
            assert a.messages[:-1] == d.messages[:-1]  # the same prompt
            assert a.node_path[-1] == d.node_path[-1]  # the same correct solution
            assert (a.style, d.style) == ("astro", "direct")
            assert d.k == d.backtracks == 0
            assert a.backtracks == a.k  # a wrong attempt is followed by one move back
        # the paper's mix: per problem one direct (k=0) trace and up to three search traces
        for problem, count in Counter(r.problem_id for r in astro).items():
            ks = [r.k for r in astro if r.problem_id == problem]
            assert ks.count(0) == 1 and count - 1 <= 3
