"""Registered checkpoints pulled into a shared cache: a cached `name:version` is reused only
while it is the checkpoint the registry describes (regression: every registry numbers from 1,
and a second `astro demo` folder's trainer started SFT from the first folder's warm model)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.engines.sources import ModelSource, resolve_model
from astro_core.training.models import resolve_starting_model


def model_copy(tiny_model_dir: Path, dest: Path, note: str) -> Path:
    shutil.copytree(tiny_model_dir, dest)
    (dest / "note.txt").write_text(note)  # a different file: a different checkpoint
    return dest


class CountingStore(LocalCheckpointStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pulls = 0

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        self.pulls += 1
        return super().pull(name, dest, version=version, alias=alias)


def test_two_registries_same_name_and_version_are_not_confused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "checkpoint-cache"  # shared, as ~/.astro/checkpoint-cache is
    first, second = LocalCheckpointStore(tmp_path / "r1"), LocalCheckpointStore(tmp_path / "r2")
    first.register("warm", model_copy(tiny_model_dir, tmp_path / "a", "first"))
    second.register("warm", model_copy(tiny_model_dir, tmp_path / "b", "second"))

    from_first = resolve_starting_model("warm:1", first, cache)
    assert (from_first.path / "note.txt").read_text() == "first"
    from_second = resolve_starting_model("warm:1", second, cache)
    assert from_second.ref == "warm:1"
    assert (from_second.path / "note.txt").read_text() == "second"
    # and back: each resolve serves the registry it asked
    assert (resolve_starting_model("warm:1", first, cache).path / "note.txt").read_text() == "first"


def test_a_cached_version_is_pulled_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "registry")
    store.register("m", model_copy(tiny_model_dir, tmp_path / "m", "one"))
    for _ in range(3):
        resolved = resolve_model(ModelSource(name="m", version=1), store, tmp_path / "cache")
    assert store.pulls == 1
    assert (resolved.path / "note.txt").read_text() == "one"


def test_a_half_pulled_copy_is_pulled_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "registry")
    store.register("m", model_copy(tiny_model_dir, tmp_path / "m", "whole"))
    cache = tmp_path / "cache"
    resolved = resolve_model(ModelSource(name="m", version=1), store, cache)
    (resolved.path / ".astro_pulled").unlink()  # as if the pull had stopped before its end
    (resolved.path / "note.txt").write_text("torn")
    again = resolve_model(ModelSource(name="m", version=1), store, cache)
    assert (again.path / "note.txt").read_text() == "whole"


class SlowStore(LocalCheckpointStore):
    """Pulls one file at a time with a pause between, so concurrent pulls overlap."""

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        super().pull(name, dest, version=version, alias=alias)
        for file in sorted(Path(dest).rglob("*")):
            time.sleep(0.005)  # a reader that looked now would see a partly written copy
            if file.is_file():
                file.touch()
        return Path(dest)


def test_concurrent_pulls_from_two_registries_each_get_their_own_whole_copy(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two platforms sharing a cache resolve `warm:1` from different registries at once:
    each gets its own registry's files, every file present, and no partial pull is left."""
    cache = tmp_path / "cache"
    stores = {}
    for note in ("first", "second"):
        stores[note] = SlowStore(tmp_path / f"r-{note}")
        stores[note].register("warm", model_copy(tiny_model_dir, tmp_path / note, note))
    expected = sorted(p.name for p in tiny_model_dir.iterdir()) + ["note.txt"]
    seen: list[tuple[str, Path]] = []
    errors: list[BaseException] = []

    def resolve(note: str) -> None:
        try:
            path = resolve_model(ModelSource(name="warm", version=1), stores[note], cache).path
            files = sorted(p.name for p in path.iterdir() if p.name != ".astro_pulled")
            assert files == sorted(expected), files
            seen.append(((path / "note.txt").read_text(), path))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=resolve, args=(n,)) for n in ("first", "second") * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(seen) == 8
    by_note = {note: {path for n, path in seen if n == note} for note in ("first", "second")}
    assert all(len(paths) == 1 for paths in by_note.values())  # one copy per registry
    assert by_note["first"] != by_note["second"]
    leftovers = [p.name for p in (cache / "warm").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_failed_pull_leaves_nothing_behind(tiny_model_dir: Path, tmp_path: Path) -> None:
    class BrokenStore(LocalCheckpointStore):
        def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
            super().pull(name, dest, version=version, alias=alias)
            raise OSError("connection reset halfway")

    store = BrokenStore(tmp_path / "registry")
    store.register("m", model_copy(tiny_model_dir, tmp_path / "m", "x"))
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="connection reset"):
        resolve_model(ModelSource(name="m", version=1), store, cache)
    assert list((cache / "m").iterdir()) == []
