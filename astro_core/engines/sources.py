"""Where a model comes from: a directory path, or a registered checkpoint.

A registered checkpoint is fetched through the `CheckpointStore` seam into a local cache
directory (files are sha256-verified by the store) and served under the version string
`name:version`. A cached copy is reused only while it is the checkpoint the store describes
now: `name:version` alone does not say which, since every registry numbers from 1 (each
`astro demo` folder has its own registry, and a machine's trainers share one cache).

The cache is bounded (`ASTRO_CHECKPOINT_CACHE_GB`, default 100): after each resolve, the
copies used longest ago are removed until the rest fit, sparing the one just resolved and any
used within the last few minutes (a process may still be loading it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from astro_core.checkpoints import CheckpointInfo, CheckpointStore

_PULLED = ".astro_pulled"  # written after a complete pull, so a half-pulled dir is redone
CACHE_LIMIT_ENV = "ASTRO_CHECKPOINT_CACHE_GB"
DEFAULT_CACHE_LIMIT_GB = 100.0
# A copy used this recently is never evicted: a trainer or generator may still be reading it
# (a model is read once, at load, within seconds of its resolve).
EVICTION_GRACE_S = 600.0
LEFTOVER_GRACE_S = 86400.0  # a private pull dir untouched this long belongs to a dead pull


class ModelNotFound(LookupError):
    """No model directory at the path, or no such registered checkpoint."""


class ModelSource(BaseModel):
    """A directory path, or a registered checkpoint by name + version or alias."""

    model_config = ConfigDict(frozen=True)

    path: str = Field("", description="Hugging Face model directory; wins over name.")
    name: str = Field("", description="Registered checkpoint name.")
    version: int = Field(0, ge=0, description="Registered version; 0: use alias.")
    alias: str = Field("", description='Alias such as "sft"; empty with version 0: "latest".')

    def describe(self) -> str:
        if self.path:
            return self.path
        if self.version:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias or 'latest'}"


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    version: str  # "" for a plain directory: the engine derives a content digest


def resolve_model(
    source: ModelSource,
    store: CheckpointStore | None,
    cache_dir: str | Path,
    cache_limit_bytes: int | None = None,
) -> ResolvedModel:
    """A local directory for source; pulls a registered checkpoint into cache_dir, which is
    then pruned to cache_limit_bytes (default: `ASTRO_CHECKPOINT_CACHE_GB`)."""
    if source.path:
        path = Path(source.path).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"model directory {source.path} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"{source.path} is not a Hugging Face model (no config.json)")
        return ResolvedModel(path.resolve(), path.resolve().name, "")
    if not source.name:
        raise ValueError("a model reference needs a path or a registered name")
    if store is None:
        raise RuntimeError(f"cannot load {source.describe()}: no checkpoint registry is configured")
    try:
        info = store.get(source.name, version=source.version, alias=source.alias)
    except LookupError as exc:
        raise ModelNotFound(f"no registered checkpoint {source.describe()}: {exc}") from exc
    identity = checkpoint_identity(info)
    # One directory per checkpoint *content*, so two registries' `name:1` never share one,
    # and a pull lands whole: it fills a private directory that is renamed into place, so
    # a concurrent reader sees either nothing or every file.
    dest = Path(cache_dir) / info.name / f"{info.version}-{identity.split()[-1][:16]}"
    limit = cache_limit_bytes if cache_limit_bytes is not None else cache_limit_from_env()
    if not _mark_used(dest, identity):
        _pull_into_place(store, info, dest, identity)
    prune_cache(Path(cache_dir), limit, keep=dest)
    return ResolvedModel(dest, info.name, info.ref)


def cache_limit_from_env() -> int:
    """`ASTRO_CHECKPOINT_CACHE_GB` in bytes; ValueError naming the variable when it is not a
    non-negative number."""
    raw = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    if not raw:
        return int(DEFAULT_CACHE_LIMIT_GB * 1e9)
    try:
        gigabytes = float(raw)
    except ValueError:
        gigabytes = -1.0
    if not 0 <= gigabytes < 1e9:  # also refuses nan and inf
        raise ValueError(f"{CACHE_LIMIT_ENV}={raw!r}: give a size in GB, a number >= 0")
    return int(gigabytes * 1e9)


@dataclass(frozen=True)
class CachedCopy:
    path: Path
    last_used: float  # epoch seconds: when it was pulled or last resolved
    size: int  # bytes


def cached_copies(cache_dir: Path) -> list[CachedCopy]:
    """Every complete copy in the cache (`<name>/<folder>/` holding the pull marker), those
    of older layouts included."""
    copies = []
    for name_dir in _subdirs(cache_dir):
        for copy in _subdirs(name_dir):
            marker = copy / _PULLED
            if marker.is_file():
                copies.append(CachedCopy(copy, marker.stat().st_mtime, _tree_size(copy)))
    return copies


def prune_cache(
    cache_dir: Path, limit_bytes: int, keep: Path, grace_s: float = EVICTION_GRACE_S
) -> list[Path]:
    """Remove the least recently used copies until the cache fits limit_bytes, never `keep`
    nor a copy used within grace_s; also clears what dead pulls left. The removed copies."""
    now = time.time()
    for name_dir in _subdirs(cache_dir):
        for leftover in name_dir.glob(".*"):
            private = leftover.name.endswith((".partial", ".stale")) and leftover.is_dir()
            if private and now - leftover.stat().st_mtime > LEFTOVER_GRACE_S:
                shutil.rmtree(leftover, ignore_errors=True)
    copies = sorted(cached_copies(cache_dir), key=lambda c: c.last_used)
    total = sum(c.size for c in copies)
    removed = []
    for copy in copies:
        if total <= limit_bytes:
            break
        if copy.path == keep or now - copy.last_used < grace_s:
            continue
        # Out of sight first (a reader then sees no copy and pulls again), then deleted.
        stale = _private_dir(copy.path, ".stale")
        try:
            os.replace(copy.path, stale / "old")
        except OSError:  # another process evicted or replaced it first
            shutil.rmtree(stale, ignore_errors=True)
            continue
        shutil.rmtree(stale, ignore_errors=True)
        total -= copy.size
        removed.append(copy.path)
    return removed


def _subdirs(path: Path) -> list[Path]:
    """Visible subdirectories (hidden ones are private to a pull in progress)."""
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _mark_used(dest: Path, identity: str) -> bool:
    """Touch the marker of a complete cached copy of `identity` (its mtime is the copy's last
    use, which eviction reads); False when there is none, or another process just evicted it."""
    if _pulled_identity(dest) != identity:
        return False
    try:
        os.utime(dest / _PULLED)
    except FileNotFoundError:
        return False
    return True


def _pulled_identity(dest: Path) -> str:
    marker = dest / _PULLED
    return marker.read_text().strip() if marker.is_file() else ""


def _pull_into_place(
    store: CheckpointStore, info: CheckpointInfo, dest: Path, identity: str
) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _private_dir(dest, ".partial")
    try:
        store.pull(info.name, partial, version=info.version)
        (partial / _PULLED).write_text(identity + "\n")
        if dest.exists():  # a copy whose marker is gone (torn): set it aside, then replace it
            if _pulled_identity(dest) == identity:
                return  # another process finished the same pull first
            stale = _private_dir(dest, ".stale")
            os.replace(dest, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(partial, dest)
        except OSError:
            if _pulled_identity(dest) != identity:  # not a concurrent twin's finished pull
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _private_dir(dest: Path, suffix: str) -> Path:
    """A new empty directory beside dest, hidden, that no other process will use."""
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent))


def checkpoint_identity(info: CheckpointInfo) -> str:
    """`name:version` and a digest of the version's files (their sha256s as registered), or
    of where they are stored when the store lists no digests."""
    listed = sorted(info.sha256.items())
    content = "".join(f"{file}\0{digest}\n" for file, digest in listed) or info.artifact_uri
    return f"{info.ref} {hashlib.sha256(content.encode()).hexdigest()}"
