"""Where a model comes from: a directory path, or a registered checkpoint.

A registered checkpoint is fetched through the `CheckpointStore` seam into a local cache
directory (files are sha256-verified by the store) and served under the version string
`name:version`. A cached copy is reused only while it is the checkpoint the store describes
now: `name:version` alone does not say which, since every registry numbers from 1 (each
`astro demo` folder has its own registry, and a machine's trainers share one cache).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from astro_core.checkpoints import CheckpointInfo, CheckpointStore

_PULLED = ".astro_pulled"  # written after a complete pull, so a half-pulled dir is redone


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
    source: ModelSource, store: CheckpointStore | None, cache_dir: str | Path
) -> ResolvedModel:
    """A local directory for source; pulls a registered checkpoint into cache_dir."""
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
    if _pulled_identity(dest) != identity:
        _pull_into_place(store, info, dest, identity)
    return ResolvedModel(dest, info.name, info.ref)


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
