"""`astro verify`: exit codes, JSON output, and file mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_bare_letters_and_words_count() -> None:
    """docs/verifier.md: a letter counts without a box (`--gold B --response B` was exit 1)."""
    for gold, response in (("B", "B"), (r"\text{(C)}", "C"), (r"\text{Monday}", "Monday")):
        result = runner.invoke(app, ["verify", "--gold", gold, "--response", response])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["equal"] is True
    wrong = runner.invoke(app, ["verify", "--gold", "B", "--response", "C"])
    assert wrong.exit_code == 1 and json.loads(wrong.stdout)["equal"] is False


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--gold", "", "--response", "B"], 2, "--gold is empty"),
        (["--gold", "  ", "--response", "B"], 2, "--gold is empty"),
        (["--gold", "1", "--response", "1", "--timeout", "nan"], 2, "--timeout"),
        (["--gold", "1", "--response", "1", "--workers", "100000"], 2, "--workers"),
    ],
)
def test_bad_single_mode_input_is_a_usage_error(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["verify", *args])
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    assert result.stdout.strip() == "" or "Usage" in result.output


def test_bad_file_mode_input_writes_nothing(tmp_path: Path) -> None:
    """Each: one line on stderr, a non-zero exit, and no output file."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    blank_gold = tmp_path / "blank.jsonl"
    blank_gold.write_text(json.dumps({"gold": " ", "pred": "1"}) + "\n")
    null_pred = tmp_path / "null.jsonl"
    null_pred.write_text(json.dumps({"gold": "1", "pred": None}) + "\n")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"gold": "1", "pred": "1"}) + "\n")
    out = tmp_path / "out.jsonl"
    cases = [
        ([str(empty), str(out)], 1, "has no lines to verify"),
        ([str(blank_gold), str(out)], 2, ":1: 'gold' is empty"),
        ([str(null_pred), str(out)], 2, ":1: 'gold' and 'pred'/'response' must be"),
        ([str(good), str(tmp_path / "missing" / "out.jsonl")], 2, "no such directory"),
        ([str(good), str(good)], 2, "--out is the input file"),
    ]
    for (source, target), code, message in cases:
        result = runner.invoke(app, ["verify", "--file", source, "--out", target])
        assert result.exit_code == code, (source, result.output)
        [line] = result.output.strip().splitlines()
        assert line.startswith("error: ") and message in line
        assert not out.exists() and not (tmp_path / "missing").exists()
    assert good.read_text() == json.dumps({"gold": "1", "pred": "1"}) + "\n"


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


def test_checks_on_a_running_verifier_service(tmp_path: Path) -> None:
    """--verifier HOST:PORT sends the checks to a real service; both modes agree with the
    local pool, and an unreachable service is a one-line error with a non-zero exit."""
    from services.runtime.config import ServiceConfig
    from services.testing import ServiceThread
    from services.verifier.server import register
    from tests.conftest import free_port

    config = ServiceConfig(port=0, metrics_port=None, settings={"workers": 1})
    with ServiceThread("verifier", register, config) as svc:
        one = runner.invoke(
            app,
            [
                "verify",
                "--gold",
                "025",
                "--response",
                r"so $\boxed{25}$",
                "--verifier",
                svc.address,
            ],
        )
        assert one.exit_code == 0, one.output
        assert json.loads(one.stdout) == {"equal": True, "extracted": "25", "reason": "equal"}
        wrong = runner.invoke(
            app, ["verify", "--gold", "3", "--response", r"\boxed{4}", "--verifier", svc.address]
        )
        assert wrong.exit_code == 1 and json.loads(wrong.stdout)["equal"] is False
        source = tmp_path / "in.jsonl"
        rows = [{"gold": "1/2", "pred": r"\boxed{0.5}"}, {"gold": "[0,1)", "pred": "[0,1]"}]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / "out.jsonl"
        result = runner.invoke(
            app, ["verify", "--file", str(source), "--out", str(out), "--verifier", svc.address]
        )
        assert result.exit_code == 0, result.output
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert [w["equal"] for w in written] == [True, False]
    nobody = f"127.0.0.1:{free_port()}"
    down = runner.invoke(app, ["verify", "--gold", "3", "--response", "3", "--verifier", nobody])
    assert down.exit_code == 1
    [line] = down.output.strip().splitlines()
    assert line.startswith(f"error: verifier at {nobody}: UNAVAILABLE")
