"""Checkpoints: the `CheckpointStore` seam (here), files on any filesystem (`artifacts`) and
the server-less store (`local.LocalCheckpointStore`).

The registry service's gRPC client and the in-process store both implement `CheckpointStore`;
the trainer registers through it and the generator loads through it.
"""

from __future__ import annotations

import re
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


class CheckpointInUse(CheckpointError):
    """The version cannot be deleted: an alias points at it."""


# Names and aliases appear in refs ("name:3", "name@sft") and in storage paths.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LATEST = "latest"  # moved to every new version automatically


def check_name(name: str, what: str = "model name") -> str:
    """Return name, or raise ValueError saying why it is not a valid model name or alias."""
    if not _NAME.fullmatch(name or ""):
        shown = repr(name) if len(name) <= 140 else f"{name[:128]!r}... ({len(name)} characters)"
        raise ValueError(
            f"{what} {shown} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_stage(stage: str) -> str:
    """Return the stage; empty means "base", anything else must be one of STAGES."""
    stage = stage or "base"
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is invalid: choose from {', '.join(STAGES)}")
    return stage


def parse_ref(ref: str) -> tuple[str, int, str]:
    """`name`, `name:VERSION` or `name@ALIAS` -> (name, version, alias); bare name = latest."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return check_name(name), 0, check_name(alias, "alias")
    if ":" in ref:
        name, _, version = ref.partition(":")
        if not version.isdigit() or int(version) < 1:
            raise ValueError(f"version in {ref!r} must be a positive integer")
        return check_name(name), int(version), ""
    return check_name(ref), 0, LATEST


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


@dataclass(frozen=True)
class CheckpointEvent:
    """A change seen by a watcher: a new version, a moved alias or a deletion."""

    kind: str  # "registered", "alias" or "deleted"
    checkpoint: CheckpointInfo
    alias: str = ""  # for "alias": the alias that moved
    event_id: str = ""  # position in the event log, to resume after


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
