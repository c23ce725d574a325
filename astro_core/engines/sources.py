"""Where a model comes from: a directory path, or a registered checkpoint.

A registered checkpoint is fetched through the `CheckpointStore` seam into a local cache
directory (files are sha256-verified by the store) and served under the version string
`name:version`. A cached copy is reused only while it is the checkpoint the store describes
now: `name:version` alone does not say which, since every registry numbers from 1 (each
`astro demo` folder has its own registry, and a machine's trainers share one cache).
"""

from __future__ import annotations

import hashlib
import shutil
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
    dest = Path(cache_dir) / info.name / str(info.version)
    identity = checkpoint_identity(info)
    marker = dest / _PULLED
    if not marker.is_file() or marker.read_text().strip() != identity:
        if dest.exists():  # half pulled, or another registry's `name:version`
            shutil.rmtree(dest)
        store.pull(info.name, dest, version=info.version)
        marker.write_text(identity + "\n")
    return ResolvedModel(dest, info.name, info.ref)


def checkpoint_identity(info: CheckpointInfo) -> str:
    """`name:version` and a digest of the version's files (their sha256s as registered), or
    of where they are stored when the store lists no digests."""
    listed = sorted(info.sha256.items())
    content = "".join(f"{file}\0{digest}\n" for file, digest in listed) or info.artifact_uri
    return f"{info.ref} {hashlib.sha256(content.encode()).hexdigest()}"
