"""`astro verify`: check answers against gold answers, one pair or a JSONL file.

    astro verify --gold '\\frac12' --response 'so the answer is $\\boxed{0.5}$'
    astro verify --file samples.jsonl --out checked.jsonl --workers 4

One pair prints a JSON object and exits 0 when correct, 1 when not. File mode reads lines with
`gold` and `pred` (or `response`) and writes each back with `equal`, `extracted`, `reason`.
Checks run in a local worker pool, or on a running service with --verifier HOST:PORT.
Bad input (an empty gold, a file without lines, an output folder that does not exist) is one
line on stderr and exit 2 (exit 1 for an input file with nothing to verify), before anything
is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from astro_cli.errors import fail

_CHUNK = 256  # items per batch in file mode: the progress bar moves, memory stays flat


def _gold_text(value: Any) -> str:
    """AMC golds are JSON floats (27.0); the rest are strings."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_text(value: Any) -> bool:
    """A gold or response a line may hold: a string or a finite number (not true/false)."""
    if isinstance(value, str):
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return math.isfinite(value)
    return False


@contextmanager
def _checker(workers: int, timeout: float, verifier: str | None) -> Iterator[Any]:
    """A function items -> [(correct, extracted, reason)]: local pool or remote service."""
    from astro_core.answers import VerifierConfig, VerifierPool

    if verifier:
        import grpc

        from services.runtime.config import client_config_from_env
        from services.verifier.client import VerifierClient

        client = VerifierClient(client_config_from_env(verifier), timeout_seconds=300)
        try:
            yield lambda items: [
                (r.correct, r.extracted_answer, r.reason) for r in client.verify_batch(items)
            ]
        except grpc.RpcError as exc:
            fail(f"verifier at {verifier}: {exc.code().name}: {exc.details()}", code=1)
        finally:
            client.close()
        return
    pool = VerifierPool(VerifierConfig(workers=workers, timeout_seconds=timeout))
    try:
        yield lambda items: [(v.correct, v.extracted, v.reason) for v in pool.check_batch(items)]
    finally:
        pool.close()


def _read_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                fail(f"{path}:{number}: not JSON ({exc.msg})")
            if not isinstance(row, dict) or "gold" not in row:
                fail(f"{path}:{number}: a line needs a 'gold' field")
            if "pred" not in row and "response" not in row:
                fail(f"{path}:{number}: a line needs a 'pred' or 'response' field")
            answer = row.get("pred", row.get("response"))
            if not _is_text(row["gold"]) or not _is_text(answer):
                fail(f"{path}:{number}: 'gold' and 'pred'/'response' must be strings or numbers")
            if not _gold_text(row["gold"]).strip():
                fail(f"{path}:{number}: 'gold' is empty")
            rows.append(row)
    return rows


def verify(
    gold: Annotated[str | None, typer.Option(help="Gold answer (single mode).")] = None,
    response: Annotated[
        str | None, typer.Option(help="Model response or bare answer (single mode).")
    ] = None,
    problem: Annotated[str, typer.Option(help="Problem text (hints such as 'percent').")] = "",
    file: Annotated[
        Path | None, typer.Option(help="JSONL with gold and pred/response per line.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where file mode writes its JSONL.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=256, help="Worker processes.")] = 2,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Seconds per item, hard limit.")
    ] = 5.0,
    verifier: Annotated[
        str | None, typer.Option(help="Use a running verifier service at HOST:PORT.")
    ] = None,
) -> None:
    """Check answers: exit 0 if correct, 1 if not (single mode)."""
    from astro_core.protocols import VerifyItem

    if not math.isfinite(timeout):  # "nan" passes typer's range check
        fail(f"--timeout must be a number of seconds, got {timeout}")
    if file is None:
        if gold is None or response is None:
            fail("give --gold and --response, or --file IN.jsonl --out OUT.jsonl")
        if not gold.strip():
            fail("--gold is empty")
        with _checker(1, timeout, verifier) as check:
            [(correct, extracted, reason)] = check([VerifyItem(response, gold, problem)])
        typer.echo(json.dumps({"equal": correct, "extracted": extracted, "reason": reason}))
        raise typer.Exit(0 if correct else 1)
    if out is None:
        fail("--file needs --out")
    if not file.is_file():
        fail(f"no such file: {file}")
    if not out.parent.is_dir():
        fail(f"--out: no such directory: {out.parent}")
    if out.exists() and out.resolve() == file.resolve():
        fail("--out is the input file; write the results somewhere else")
    rows = _read_lines(file)
    if not rows:
        fail(f"{file} has no lines to verify", code=1)
    _verify_file(rows, out, workers, timeout, verifier)


def _verify_file(
    rows: Sequence[dict[str, Any]], out: Path, workers: int, timeout: float, verifier: str | None
) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from astro_core.protocols import VerifyItem

    items = [
        VerifyItem(
            str(row.get("pred", row.get("response", ""))),
            _gold_text(row["gold"]),
            str(row.get("problem", "")),
        )
        for row in rows
    ]
    correct_count = 0
    with (
        _checker(workers, timeout, verifier) as check,
        out.open("w", encoding="utf-8") as f,
        Progress(console=Console(stderr=True), transient=True) as progress,
    ):
        task = progress.add_task("verifying", total=len(items))
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            for row, (correct, extracted, reason) in zip(
                rows[start : start + _CHUNK], check(chunk), strict=True
            ):
                correct_count += correct
                written = {**row, "equal": correct, "extracted": extracted, "reason": reason}
                f.write(json.dumps(written, ensure_ascii=False) + "\n")
            progress.advance(task, len(chunk))
    typer.echo(f"{correct_count}/{len(items)} equal; wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command()(verify)
