"""Registered checkpoints pulled into a shared cache: a cached `name:version` is reused only
while it is the checkpoint the registry describes (regression: every registry numbers from 1,
and a second `astro demo` folder's trainer started SFT from the first folder's warm model)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.engines.sources import (
    ModelSource,
    cache_limit_from_env,
    cached_copies,
    prune_cache,
    resolve_model,
)
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


# -- a bounded cache ----------------------------------------------------------------------------


def age(copy: Path, seconds: float) -> None:
    """Mark a cached copy as last used `seconds` ago."""
    then = time.time() - seconds
    os.utime(copy / ".astro_pulled", (then, then))


def test_the_cache_evicts_the_least_recently_used_copies_beyond_its_limit(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = CountingStore(tmp_path / "registry")
    for name in ("a", "b", "c"):
        store.register(name, model_copy(tiny_model_dir, tmp_path / name, name))
    cache = tmp_path / "cache"

    def resolve(name: str, limit: int) -> Path:
        return resolve_model(ModelSource(name=name, version=1), store, cache, limit).path

    first = resolve("a", 10**12)
    size = sum(c.size for c in cached_copies(cache))
    limit = int(2.5 * size)  # room for two copies
    paths = {"a": first, "b": resolve("b", limit)}
    age(paths["a"], 3600)
    age(paths["b"], 1800)
    paths["c"] = resolve("c", limit)
    assert not paths["a"].exists()  # used longest ago
    assert paths["b"].is_dir() and paths["c"].is_dir()
    assert sum(c.size for c in cached_copies(cache)) <= limit

    # resolving a cached copy counts as a use: now c is the oldest and goes
    age(paths["c"], 7200)
    age(paths["b"], 3600)
    assert resolve("b", limit) == paths["b"]
    pulls = store.pulls
    again = resolve("a", limit)
    assert store.pulls == pulls + 1  # a was evicted: pulled again
    assert (again / "note.txt").read_text() == "a"
    assert paths["b"].is_dir() and not paths["c"].exists()
    assert [p.name for p in (cache / "c").iterdir()] == []  # no set-aside copy left


def test_recently_used_copies_and_the_resolved_one_are_never_evicted(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A copy used in the last minutes may still be loading in another process: the cache
    may then stay over its limit rather than pull the floor from under a reader."""
    store = LocalCheckpointStore(tmp_path / "registry")
    for name in ("a", "b"):
        store.register(name, model_copy(tiny_model_dir, tmp_path / name, name))
    cache = tmp_path / "cache"
    a = resolve_model(ModelSource(name="a", version=1), store, cache, 0).path
    assert a.is_dir()  # over a limit of 0, but it is the one just resolved
    b = resolve_model(ModelSource(name="b", version=1), store, cache, 0).path
    assert a.is_dir() and b.is_dir()  # a was used a moment ago
    age(a, 3600)
    resolve_model(ModelSource(name="b", version=1), store, cache, 0)
    assert not a.exists() and b.is_dir()


def test_pruning_clears_dead_pulls_and_copies_of_older_layouts(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    old_layout = cache / "warm" / "1"  # before copies were named by their digest
    shutil.copytree(tiny_model_dir, old_layout)
    (old_layout / ".astro_pulled").write_text("warm:1\n")
    age(old_layout, 3600)
    dead, live = cache / "warm" / ".1-abc.x.partial", cache / "warm" / ".1-abc.y.partial"
    unrelated = cache / "warm" / ".notes"
    for folder in (dead, live, unrelated):
        folder.mkdir()
    os.utime(dead, (time.time() - 2 * 86400,) * 2)
    os.utime(unrelated, (time.time() - 2 * 86400,) * 2)

    removed = prune_cache(cache, 0, keep=cache / "none")
    assert removed == [old_layout] and not old_layout.exists()
    assert not dead.exists()  # a private pull dir untouched for two days
    assert live.is_dir() and unrelated.is_dir()  # a pull in progress; not ours


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf", "1e12"])
def test_a_bad_cache_limit_is_refused_before_any_pull(
    value: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CountingStore(tmp_path / "registry")
    store.register("m", model_copy(tiny_model_dir, tmp_path / "m", "x"))
    monkeypatch.setenv("ASTRO_CHECKPOINT_CACHE_GB", value)
    with pytest.raises(ValueError, match="ASTRO_CHECKPOINT_CACHE_GB"):
        resolve_model(ModelSource(name="m", version=1), store, tmp_path / "cache")
    assert store.pulls == 0


def test_the_cache_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASTRO_CHECKPOINT_CACHE_GB", raising=False)
    assert cache_limit_from_env() == 100 * 10**9
    monkeypatch.setenv("ASTRO_CHECKPOINT_CACHE_GB", "2.5")
    assert cache_limit_from_env() == 2_500_000_000
    monkeypatch.setenv("ASTRO_CHECKPOINT_CACHE_GB", "0")
    assert cache_limit_from_env() == 0


def test_a_copy_evicted_while_being_resolved_is_pulled_again(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process evicts the copy between the check that it is complete and the touch
    that marks its use: the resolve pulls it again instead of failing."""
    from astro_core.engines import sources

    store = CountingStore(tmp_path / "registry")
    store.register("m", model_copy(tiny_model_dir, tmp_path / "m", "one"))
    cache = tmp_path / "cache"
    first = resolve_model(ModelSource(name="m", version=1), store, cache).path
    real_utime = os.utime

    def evicted_meanwhile(path: Path, *args: object, **kwargs: object) -> None:
        shutil.rmtree(first)
        monkeypatch.setattr(sources.os, "utime", real_utime)
        raise FileNotFoundError(path)

    monkeypatch.setattr(sources.os, "utime", evicted_meanwhile)
    again = resolve_model(ModelSource(name="m", version=1), store, cache).path
    assert store.pulls == 2 and again == first
    assert (again / "note.txt").read_text() == "one"
