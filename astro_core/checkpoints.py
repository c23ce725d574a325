"""The checkpoint seam: where trained models are registered and fetched from.

The registry service's gRPC client and an in-process store both implement `CheckpointStore`;
the trainer registers through it and the generator loads through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

STAGES = ("base", "sft", "grpo")


class CheckpointError(Exception):
    """Base class of checkpoint failures; the message says what is wrong."""


class CheckpointNotFound(CheckpointError, LookupError):
    """No such name, version or alias."""


class IntegrityError(CheckpointError):
    """A file's sha256 does not match what was registered."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Metadata of one registered version."""

    name: str
    version: int
    artifact_uri: str
    sha256: Mapping[str, str]
    stage: str = "base"
    parent_version: int = 0
    step: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    created_unix: float = 0.0
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """`name:version`, the model version string responses carry."""
        return f"{self.name}:{self.version}"


@runtime_checkable
class CheckpointStore(Protocol):
    def register(
        self,
        name: str,
        source_dir: str | Path,
        *,
        stage: str = "base",
        parent_version: int = 0,
        step: int = 0,
        metrics: Mapping[str, float] | None = None,
        aliases: Sequence[str] = (),
    ) -> CheckpointInfo:
        """Copy (or upload) the files of source_dir and register them as the next version."""
        ...

    def get(self, name: str, version: int = 0, alias: str = "") -> CheckpointInfo:
        """By version, or by alias; neither given means alias "latest"."""
        ...

    def list(self, name: str = "", stage: str = "") -> list[CheckpointInfo]:
        """Newest first."""
        ...

    def set_alias(self, name: str, version: int, alias: str) -> CheckpointInfo: ...

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        """Download the files into dest, verifying every sha256; raises IntegrityError."""
        ...
