"""`astro ckpt` against a running registry: register, list, show, alias, pull, tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astro_cli.main import app
from astro_core.checkpoints.artifacts import hash_tree
from services.runtime.redis_store import connect_redis
from services.testing import ServiceThread
from tests.conftest import REPO
from tests.registry.conftest import RegistryEnv, make_tree


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    """A registry on the embedded Redis (the CLI does not depend on the Redis flavour)."""
    with connect_redis(directory=tmp_path / "redis") as handle:
        env = RegistryEnv(handle.url, "astro:reg:", str(tmp_path / "artifacts"), 0)
        service: ServiceThread = env.start()
        try:
            yield service.address
        finally:
            service.stop()


def astro(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_round_trip(address: str, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    code, out, err = astro(
        "ckpt",
        "register",
        "tiny",
        str(source),
        "--registry",
        address,
        "--stage",
        "sft",
        "--alias",
        "sft",
        "--metric",
        "loss=0.5",
    )
    assert (code, out.strip()) == (0, "1"), err
    code, out, err = astro("ckpt", "register", "tiny", str(source), "--registry", address)
    assert (code, out.strip()) == (0, "2"), err

    code, out, _ = astro("ckpt", "list", "--registry", address)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:3] == ["NAME", "VERSION", "STAGE"]
    assert [line.split()[:3] for line in lines[1:]] == [["tiny", "2", "base"], ["tiny", "1", "sft"]]

    code, out, _ = astro("ckpt", "show", "tiny@sft", "--registry", address)
    shown = json.loads(out)
    assert code == 0 and shown["version"] == 1 and shown["aliases"] == ["sft"]
    assert shown["metrics"] == {"loss": 0.5} and shown["sha256"] == hash_tree(str(source))

    code, out, _ = astro("ckpt", "alias", "tiny", "2", "best", "--registry", address)
    assert (code, out.strip()) == (0, "tiny:2 @best")
    code, out, _ = astro("ckpt", "show", "tiny:2", "--registry", address)
    assert json.loads(out)["aliases"] == ["best", "latest"]

    code, out, _ = astro(
        "ckpt", "pull", "tiny@best", str(tmp_path / "pulled"), "--registry", address
    )
    assert code == 0 and Path(out.strip()) == tmp_path / "pulled"
    assert hash_tree(str(tmp_path / "pulled")) == hash_tree(str(source))

    # Tamper with the stored copy: pull exits non-zero with one line naming the file.
    stored = Path(shown["artifact_uri"]) / "file0.bin"
    stored.write_bytes(b"not what was registered")
    pull = subprocess.run(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "ckpt",
            "pull",
            "tiny:1",
            str(tmp_path / "bad"),
            "--registry",
            address,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pull.returncode == 1
    assert pull.stderr.strip().splitlines() == [pull.stderr.strip()]  # one line
    assert "sha256 mismatch for file0.bin" in pull.stderr and "tiny:1" in pull.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_errors_are_one_line(address: str, tmp_path: Path) -> None:
    source = str(make_tree(tmp_path / "s"))
    cases = [
        (["show", "nope"], 1, "no model named 'nope'"),
        (["show", "tiny:x"], 2, "positive integer"),
        (["register", "tiny", str(tmp_path / "missing")], 2, "is not a directory"),
        (["register", "tiny", source, "--stage", "rl"], 2, "stage 'rl'"),
        (["register", "tiny", source, "--metric", "loss"], 2, "KEY=NUMBER"),
        (["alias", "tiny", "1", "latest"], 2, "latest"),
    ]
    for args, want_code, words in cases:
        code, _, err = astro("ckpt", *args, "--registry", address)
        assert (code, len(err.strip().splitlines())) == (want_code, 1), (args, err)
        assert words in err
    code, _, err = astro("ckpt", "list", "--registry", "127.0.0.1:1")
    assert code == 1 and "not reachable" in err and len(err.strip().splitlines()) == 1


def test_cli_uses_the_address_astro_up_recorded(
    address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_data_dir: Path
) -> None:
    state = {"pid": os.getpid(), "services": {"registry": {"address": address}}}
    (isolated_data_dir / "up.json").write_text(json.dumps(state))
    monkeypatch.delenv("ASTRO_REGISTRY", raising=False)
    code, out, err = astro("ckpt", "register", "tiny", str(make_tree(tmp_path / "s")))
    assert (code, out.strip()) == (0, "1"), err


def test_register_of_an_empty_directory_is_one_line(address: str, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, out, err = astro("ckpt", "register", "m", str(tmp_path / "empty"), "--registry", address)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"error: {tmp_path / 'empty'} holds no files"]
    code, out, _ = astro("ckpt", "list", "--registry", address)
    assert code == 0 and len(out.strip().splitlines()) == 1  # the header row only
