"""`build_report` and `astro report`: contents, self-containment, a real browser, errors."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.analysis import pearson
from astro_core.analysis.report import build_report
from astro_core.analysis.runs import MixedProtocols, ReportInputError
from astro_core.answers import VerifierPool
from astro_core.cloning.config import CloningConfig
from astro_core.cloning.dataset import clone_trees, write_traces
from astro_core.evaluation import EvalConfig, EvaluatedModel, evaluate
from astro_core.synthetic import ProductProblem, parse_problem, write_problems
from astro_core.trees import write_trees
from tests.analysis import browser
from tests.analysis.conftest import CHECKPOINTS, PAPER
from tests.cloning.trees import apples_tree, random_tree
from tests.evaluation.scripted import ScriptedGenerator

PLOTS = {
    "accuracy",
    "accuracy_vs_backtracks",
    "training_curves",
    "backtracks_over_steps",
    "backtracks_histogram",
    "math500_levels",
}
GRAPHS = {"example_correct_with_backtrack", "example_wrong", "trace", "tree"}


@pytest.fixture
def trees_and_traces(tmp_path: Path) -> tuple[Path, Path]:
    trees = [apples_tree(), random_tree(3), random_tree(5)]
    trees_file = tmp_path / "trees.jsonl"
    write_trees(trees_file, trees)
    traces_file = tmp_path / "traces.jsonl"
    result = clone_trees(trees, CloningConfig(self_eval=False))
    write_traces(traces_file, result.records)
    return trees_file, traces_file


@pytest.fixture
def full_report(
    eval_dirs: dict[str, Path], train_log: Path, trees_and_traces: tuple[Path, Path], tmp_path: Path
) -> Path:
    trees_file, traces_file = trees_and_traces
    out = tmp_path / "report"
    report = build_report(
        list(eval_dirs.values()),
        out,
        train_logs=[train_log],
        trees=trees_file,
        traces=traces_file,
    )
    assert set(report.plots) == PLOTS and set(report.graphs) == GRAPHS
    assert report.html == out / "report.html" and report.markdown == out / "report.md"
    return out


def test_report_contents(full_report: Path, eval_dirs: dict[str, Path]) -> None:
    page = (full_report / "report.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    summaries = {k: json.loads((d / "summary.json").read_text()) for k, d in eval_dirs.items()}
    # the accuracy table: every checkpoint's avg@4 per benchmark, the paper beside it
    for label, summary in summaries.items():
        for scores in summary["benchmarks"].values():
            assert f"{100 * scores['accuracy']:.1f}" in text
        assert label in text
    assert "paper: ASTRO RL" in text and "81.8" in text and "Llama-3.1-70B-Instruct" in text
    # Pearson r over the three RL checkpoints, as computed from their summaries
    rl = [summaries[c.label] for c in CHECKPOINTS if c.arm == "rl"]
    for bench in ("math500", "aime24"):
        expected = pearson(
            [s["benchmarks"][bench]["mean_backtracks"] for s in rl],
            [s["benchmarks"][bench]["accuracy"] for s in rl],
        )
        assert expected.defined and expected.r is not None and expected.r > 0.9
        assert f"{expected.r:.3f}" in text
    assert "Pearson r across the RL checkpoints (3)" in text
    # examples: a correct response with a backtrack and a wrong one, from the last checkpoint
    assert "rl-30, a correct response that backtracks" in text and "rl-30, a wrong response" in text
    assert page.count('<svg class="graph"') == len(GRAPHS)
    for name in PLOTS:
        assert (full_report / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    md = (full_report / "report.md").read_text()
    assert "| checkpoint | arm | step |" in md and f"{expected.r:.3f}" in md


def test_report_is_self_contained_and_its_files_exist(full_report: Path) -> None:
    page = (full_report / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert not re.search(r"url\((?!#)", page)  # no stylesheet or SVG reference leaves the page
    md = (full_report / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert len(links) == len(PLOTS) + len(GRAPHS)
    assert all((full_report / link).is_file() for link in links)


@pytest.mark.skipif(browser.chromium() is None, reason="chromium is not installed")
def test_every_plot_and_graph_is_visible_in_chromium(full_report: Path, tmp_path: Path) -> None:
    page = full_report / "report.html"
    found = browser.measure(page, "img.plot, svg.graph")
    boxes = found["boxes"]
    assert len([b for b in boxes if b["tag"] == "img"]) == len(PLOTS)
    assert len([b for b in boxes if b["tag"] == "svg"]) == len(GRAPHS)
    shot = browser.screenshot(page, int(found["height"]) + 50, tmp_path / "shot.png")
    image = Image.open(shot).convert("RGB")
    for box in boxes:
        assert box["loaded"], f"image {box['alt']} did not load"
        assert box["w"] > 100 and box["h"] > 50, box
        left, top = int(box["x"]), int(box["y"])
        region = image.crop((left, top, left + int(box["w"]), top + int(box["h"])))
        colours = region.getcolors(maxcolors=1 << 20) or []
        background = max(colours)[0] if colours else 0
        drawn = 1 - background / (region.width * region.height)
        assert len(colours) > 8 and drawn > 0.01, f"{box['tag']} {box['alt']} looks blank"


def test_fewer_than_three_checkpoints_get_no_r(eval_dirs: dict[str, Path], tmp_path: Path) -> None:
    report = build_report([eval_dirs["base"], eval_dirs["sft"]], tmp_path / "two")
    text = html.unescape(report.html.read_text())
    assert "needs at least 3 checkpoints, got 2" in text
    assert (
        "no r (needs at least 3 checkpoints" not in text or "accuracy_vs_backtracks" in report.plots
    )
    assert "No response length or reward over steps" in text  # no log, no steps: said, not drawn
    assert "training_curves" not in report.plots


def going_back_table(page: str) -> list[list[str]]:
    """The rows of the report's "Where it goes back" table, as text cells."""
    section = page.split("<h2>Where it goes back</h2>")[1].split("<h2>")[0]
    table = section.split("<table>")[1].split("</table>")[0]
    return [
        [html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)
    ]


def test_where_it_goes_back(pool: VerifierPool, tmp_path: Path) -> None:
    """A searcher goes back after its wrong guesses and on after its right one; a habit goes
    back after every guess; a third model's check calls every guess right (wrongly) and it acts
    on that: the truth and its own check tell them apart."""
    problems = [ProductProblem(3, 7), ProductProblem(5, 4), ProductProblem(6, 9)]
    path = write_problems(problems, tmp_path / "family.jsonl")
    back = PAPER.negative_reflection(PAPER.backtrack_to("the beginning"))

    def attempt(family: ProductProblem, guess: int, stated: str) -> str:
        check = f"Try x = {guess}: {guess} * {family.b} = {family.c} (need {family.c}): right."
        shown = family.try_step(guess) if stated == "true" else check
        return f"{shown}\n\n{family.answer_step(guess)}"

    scripts = {  # per sample: (guess offset, goes back after it)
        "searcher": [[(1, True), (0, False)], [(-1, True), (2, True), (0, False)]],
        "habit": [[(1, True), (0, True), (0, False)], [(0, True), (0, False)]],
        "own-check": [[(1, False)], [(0, False)]],
    }
    dirs = []
    for label, script in scripts.items():

        def respond(problem: str, i: int, script: list = script, label: str = label) -> str:
            family = parse_problem(problem)
            assert family is not None
            stated = "right" if label == "own-check" else "true"
            parts = []
            for offset, goes_back in script[i]:
                parts.append(attempt(family, family.x + offset, stated))
                if goes_back:
                    parts.append(back)
            return "\n\n".join(parts)

        out = tmp_path / label
        evaluate(
            [str(path)],
            ScriptedGenerator(respond),
            pool,
            EvalConfig(n=2, pass_k=[1]),
            out,
            model=EvaluatedModel(label=label),
        )
        dirs.append(out)
    report = build_report(dirs, tmp_path / "report")
    rows = going_back_table(report.html.read_text())
    assert rows[0] == [
        "checkpoint",
        "benchmark",
        "back after wrong",
        "back after right",
        "recovery",
        "back after its check said wrong",
        "back after its check said right",
    ]
    by_label = {row[0]: row[2:] for row in rows[1:]}
    # 3 problems: the searcher has 3 wrong attempts per problem, all followed by a move back,
    # and 2 right ones, none; the habit goes back after 1 of 1 wrong and 2 of 4 right
    assert by_label["searcher"] == ["100% of 9", "0% of 6", "100% of 6", "100% of 9", "0% of 6"]
    assert by_label["habit"] == ["100% of 3", "50% of 12", "100% of 3", "100% of 3", "50% of 12"]
    # its check calls everything right: by the truth it stops after wrong answers, by its
    # check nothing was ever wrong
    assert by_label["own-check"] == ["0% of 3", "0% of 3", "0% of 3", "-", "0% of 6"]
    assert "| back after wrong |" in (tmp_path / "report" / "report.md").read_text()


def test_eval_dirs_without_the_count_get_a_note(eval_dirs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(eval_dirs["sft"], old)
    summary = json.loads((old / "summary.json").read_text())
    for scores in summary["benchmarks"].values():
        del scores["where_it_goes_back"]
    (old / "summary.json").write_text(json.dumps(summary))
    text = html.unescape(build_report([old], tmp_path / "r").html.read_text())
    assert "No eval dir counts its attempts" in text
    # MATH answers state no check of their own: the report shows only the truth's columns
    new = build_report([eval_dirs["sft"]], tmp_path / "n").html.read_text()
    assert going_back_table(new)[0][-1] == "recovery"


def test_input_errors(eval_dirs: dict[str, Path], tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(ReportInputError, match="has no summary.json"):
        build_report([eval_dirs["base"], unfinished], tmp_path / "r")
    with pytest.raises(ReportInputError, match="eval dir not found"):
        build_report([tmp_path / "nowhere"], tmp_path / "r")
    mixed = tmp_path / "mixed"
    shutil.copytree(eval_dirs["sft"], mixed)
    summary = json.loads((mixed / "summary.json").read_text())
    summary["protocol"]["temperature"] = 1.0
    (mixed / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(MixedProtocols, match=r"temperature differs .*--allow-mixed"):
        build_report([eval_dirs["base"], mixed], tmp_path / "r")
    report = build_report([eval_dirs["base"], mixed], tmp_path / "r", allow_mixed=True)
    assert "Mixed protocols (--allow-mixed): temperature differs" in html.unescape(
        report.html.read_text()
    )
    (mixed / "summary.json").write_text("{not json")
    with pytest.raises(ReportInputError, match="not valid JSON"):
        build_report([mixed], tmp_path / "r")


runner = CliRunner()


def test_cli(eval_dirs: dict[str, Path], train_log: Path, tmp_path: Path) -> None:
    rl = [str(eval_dirs[c.label]) for c in CHECKPOINTS if c.arm == "rl"]
    out = tmp_path / "cli"
    # --evals DIR DIR DIR (a shell glob) and a trainer log among the plain arguments
    result = runner.invoke(app, ["report", "--evals", *rl, str(train_log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and (out / "report.html").is_file()
    assert (out / "training_curves.png").is_file()

    def error(*args: str) -> tuple[int, str]:
        outcome = runner.invoke(app, ["report", *args, "--out", str(tmp_path / "e")])
        return outcome.exit_code, outcome.stderr.strip()

    code, message = error("--evals", str(tmp_path))
    assert code == 1 and message.startswith("error: eval dir") and "\n" not in message
    code, message = error()
    assert code == 2 and message == "error: give at least one eval directory with --evals DIR"
    code, message = error("--evals", rl[0], str(tmp_path / "ghost"))
    assert code == 2 and "ghost: no such eval directory or trainer log" in message
    bad_phrases = tmp_path / "phrases.yaml"
    bad_phrases.write_text("backtrack: no placeholder\n")
    code, message = error("--evals", rl[0], "--phrases", str(bad_phrases))
    assert code == 2 and "--phrases" in message and "\n" not in message


def test_hostile_text_stays_text(pool: VerifierPool, tmp_path: Path, shared_data: Path) -> None:
    from astro_core.evaluation import EvalConfig, EvaluatedModel, evaluate, load_benchmark
    from tests.evaluation.scripted import ScriptedGenerator

    hostile = '<script>alert(1)</script></svg><img src="http://example.com/x.png"> | `x`'
    bench = load_benchmark("aime24", shared_data, limit=1)

    def respond(problem: str, i: int) -> str:
        return (
            f"Step {hostile}\n\nBut wait, are we solving the problem correctly so far? Hmm... "
            f"Let's restart our solution from the beginning.\n\n{hostile} \\boxed{{{i}}}"
        )

    out = tmp_path / "eval"
    meta = EvaluatedModel(label=f"<b>{hostile}</b>", arm="rl", step=1)
    evaluate([bench], ScriptedGenerator(respond), pool, EvalConfig(n=2), out, model=meta)
    report = build_report([out], tmp_path / "report", title=hostile)
    page = report.html.read_text()
    assert "<script" not in page and '<img src="http' not in page and "</svg><img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
