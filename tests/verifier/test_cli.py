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
