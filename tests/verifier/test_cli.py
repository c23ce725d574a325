"""`astro verify`: exit codes, JSON output, and file mode."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from astro_cli.main import app

runner = CliRunner()


def test_single_pair_exit_codes() -> None:
    ok = runner.invoke(app, ["verify", "--gold", r"\frac12", "--response", r"so $\boxed{0.5}$"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"equal": True, "extracted": "0.5", "reason": "equal"}
    bad = runner.invoke(app, ["verify", "--gold", "3", "--response", "x = 4"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["equal"] is False


def test_missing_arguments_fail_with_a_message() -> None:
    result = runner.invoke(app, ["verify", "--gold", "3"])
    assert result.exit_code == 2 and "--response" in result.output


def test_file_mode(tmp_path: Path) -> None:
    rows = [
        {"gold": "025", "pred": r"\boxed{25}", "id": 1},
        {"gold": 27.0, "response": "The final answer is $27$. I hope it is correct."},
        {"gold": "(1,2)", "pred": "(2,1)"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["verify", "--file", str(source), "--out", str(out), "--workers", "2", "--timeout", "20"],
    )
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["equal"] for w in written] == [True, True, False]
    assert written[0]["id"] == 1 and written[0]["extracted"] == "25"
    assert written[2]["reason"] == "not equal"


def test_file_mode_rejects_bad_lines(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"gold": "1"}\n')
    result = runner.invoke(app, ["verify", "--file", str(source), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pred" in result.output
