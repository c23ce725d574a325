"""Checkpoint storage without a server: hashing, atomic copies, verification, the local store."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest

from astro_core.checkpoints import (
    CheckpointError,
    CheckpointInUse,
    CheckpointNotFound,
    CheckpointStore,
    IntegrityError,
    parse_ref,
)
from astro_core.checkpoints.artifacts import StagedTree, copy_tree, hash_tree, iter_tree_chunks
from astro_core.checkpoints.local import LocalCheckpointStore
from tests.conftest import REPO
from tests.registry.conftest import artifact_dirs, make_tree


def test_hash_tree_is_sha256_of_every_file(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    digests = hash_tree(str(source))
    assert set(digests) == {"file0.bin", "file1.bin", "nested/part.bin", "config.json"}
    for rel, digest in digests.items():
        assert digest == hashlib.sha256((source / rel).read_bytes()).hexdigest()
    # Chunked reading hashes the same, and marks each file's last chunk with its digest.
    chunks = list(iter_tree_chunks(str(source), chunk_bytes=500))
    assert {rel: sha for rel, _, sha in chunks if sha} == digests
    joined = b"".join(data for rel, data, _ in chunks if rel == "file0.bin")
    assert joined == (source / "file0.bin").read_bytes()


@pytest.mark.parametrize("scheme", ["plain", "file", "memory"])
def test_copy_tree_on_fsspec_urls(tmp_path: Path, scheme: str) -> None:
    source = make_tree(tmp_path / "src")
    dest = {
        "plain": str(tmp_path / "out" / "ckpt"),
        "file": f"file://{tmp_path}/out/ckpt",
        "memory": f"memory://astro-test-{uuid.uuid4().hex}/ckpt",
    }[scheme]
    digests = copy_tree(str(source), dest, expected=hash_tree(str(source)))
    assert hash_tree(dest) == digests == hash_tree(str(source))
    fs, path = fsspec.core.url_to_fs(dest)
    parent = path.rsplit("/", 1)[0]
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(parent, detail=False)] == ["ckpt"]  # no temp


def test_copy_with_wrong_expectation_leaves_nothing(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    expected = hash_tree(str(source))
    expected["file1.bin"] = "0" * 64
    with pytest.raises(IntegrityError, match="sha256 mismatch for file1.bin"):
        copy_tree(str(source), str(tmp_path / "out" / "ckpt"), expected=expected, where="m:1")
    assert list((tmp_path / "out").iterdir()) == []
    missing = {**hash_tree(str(source)), "weights.bin": "a" * 64}
    with pytest.raises(IntegrityError, match="file weights.bin is missing"):
        copy_tree(str(source), str(tmp_path / "out" / "ckpt"), expected=missing)


def test_staged_tree_rejects_unsafe_paths_and_full_destinations(tmp_path: Path) -> None:
    with StagedTree(str(tmp_path / "a")) as staged:
        for bad in ["../escape", "/abs", "a//b", "./x", ""]:
            with pytest.raises(ValueError, match="invalid"):
                staged.add(bad, b"x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(CheckpointError, match="not empty"):
        StagedTree(str(tmp_path / "full"))
    assert list(tmp_path.iterdir()) == [tmp_path / "full"]


def test_parse_ref() -> None:
    assert parse_ref("tiny") == ("tiny", 0, "latest")
    assert parse_ref("tiny:3") == ("tiny", 3, "")
    assert parse_ref("tiny@sft") == ("tiny", 0, "sft")
    for bad in ["tiny:x", "tiny:0", "bad name", "tiny@", ":3"]:
        with pytest.raises(ValueError):
            parse_ref(bad)


@pytest.mark.parametrize("root_kind", ["dir", "memory"])
def test_local_store_round_trip(tmp_path: Path, root_kind: str) -> None:
    root = str(tmp_path / "store") if root_kind == "dir" else f"memory://s-{uuid.uuid4().hex}"
    store = LocalCheckpointStore(root)
    assert isinstance(store, CheckpointStore)
    first = store.register("tiny", make_tree(tmp_path / "a"), stage="sft", aliases=["sft"])
    second = store.register(
        "tiny",
        make_tree(tmp_path / "b"),
        stage="grpo",
        parent_version=1,
        step=7,
        metrics={"reward": 0.25},
        aliases=["best"],
    )
    assert (first.version, second.version) == (1, 2)
    assert store.get("tiny").version == 2  # latest
    assert store.get("tiny", alias="sft").aliases == ("sft",)
    assert store.get("tiny", 2) == second
    assert second.aliases == ("best", "latest") and second.metrics == {"reward": 0.25}
    assert [i.ref for i in store.list()] == ["tiny:2", "tiny:1"]
    assert [i.ref for i in store.list(stage="sft")] == ["tiny:1"]
    pulled = store.pull("tiny", tmp_path / "pulled", alias="sft")
    assert hash_tree(str(pulled)) == dict(first.sha256)
    with pytest.raises(CheckpointInUse, match="sft"):
        store.delete("tiny", 1)
    store.set_alias("tiny", 2, "sft")
    store.delete("tiny", 1)
    assert [i.ref for i in store.list("tiny")] == ["tiny:2"]
    third = store.register("tiny", make_tree(tmp_path / "c"))
    assert third.version == 3  # numbers are never reused
    with pytest.raises(CheckpointNotFound, match="no version 1"):
        store.get("tiny", 1)
    with pytest.raises(CheckpointNotFound, match="no model named 'other'"):
        store.get("other")
    with pytest.raises(CheckpointNotFound, match="no alias 'nope'"):
        store.get("tiny", alias="nope")
    with pytest.raises(ValueError, match="stage 'rl'"):
        store.register("tiny", tmp_path / "a", stage="rl")
    with pytest.raises(ValueError, match="latest"):
        store.set_alias("tiny", 2, "latest")


def test_local_store_detects_tampering(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "store")
    info = store.register("tiny", make_tree(tmp_path / "a"))
    (Path(info.artifact_uri) / "file1.bin").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=r"tiny:1: sha256 mismatch for file1.bin"):
        store.pull("tiny", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_local_store_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "store")
    source = make_tree(tmp_path / "src", files=1, size=256)
    with ThreadPoolExecutor(max_workers=10) as pool:
        infos = list(pool.map(lambda _: store.register("tiny", source), range(20)))
    assert sorted(i.version for i in infos) == list(range(1, 21))
    assert store.get("tiny").version == 20


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from astro_core.checkpoints import artifacts
    from astro_core.checkpoints.local import LocalCheckpointStore

    root, source, marker = sys.argv[1:4]
    end_file = artifacts.StagedTree.end_file

    def end_file_then_hang(self, expected_sha256=""):
        digest = end_file(self, expected_sha256)
        Path(marker).touch()  # one file is on disk: the parent kills us now
        time.sleep(600)
        return digest

    artifacts.StagedTree.end_file = end_file_then_hang
    LocalCheckpointStore(root).register("tiny", source)
    """
)


def test_killed_writer_leaves_no_registered_checkpoint(tmp_path: Path) -> None:
    root, marker = tmp_path / "store", tmp_path / "marker"
    source = make_tree(tmp_path / "src")
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root), str(source), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert writer.poll() is None, "the writer exited before it was killed"
            assert time.monotonic() < deadline, "the writer never started saving"
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
    store = LocalCheckpointStore(root)
    assert store.list() == []
    with pytest.raises(CheckpointNotFound):
        store.get("tiny")
    # Only the temporary directory remains: no half checkpoint under a final name.
    leftovers = artifact_dirs(root)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert store.register("tiny", source).version == 1


def test_an_invalid_name_is_quoted_short() -> None:
    """A 100 kB name is named in the error without being repeated whole."""
    from astro_core.checkpoints import check_name

    with pytest.raises(ValueError) as err:
        check_name("a" * 100_000)
    message = str(err.value)
    assert "(100000 characters) is invalid" in message and len(message) < 300
    with pytest.raises(ValueError, match=r"^model name 'a b' is invalid"):
        check_name("a b")
