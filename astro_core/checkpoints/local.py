"""The in-process CheckpointStore: files and metadata under one root, no server.

    store = LocalCheckpointStore("/data/checkpoints")      # or "memory://ckpt", "s3://..."
    info = store.register("tiny", "out/step-100", stage="sft", aliases=["sft"])
    store.pull("tiny", "cache/tiny-sft", alias="sft")      # verifies every sha256

Layout: `<root>/<name>/<utc time>-<random>/` holds the files of one version, and
`<root>/<name>/registry.json` the metadata of every version plus the aliases. Files are copied
atomically first; the version exists once registry.json is replaced (atomically) with it in,
under a lock, so concurrent registrations never share a version. The lock is a file lock on a
local root (safe across processes) and a process lock otherwise: several processes writing one
remote root need the registry service instead.
"""

from __future__ import annotations

import fcntl
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from astro_core.checkpoints import (
    LATEST,
    CheckpointInfo,
    CheckpointInUse,
    CheckpointNotFound,
    check_name,
    check_stage,
)
from astro_core.checkpoints.artifacts import (
    ArtifactRoot,
    copy_tree,
    hash_tree,
    join_url,
    read_json,
    url_to_fs,
    write_atomic,
)

METADATA_FILE = "registry.json"
# Per registration. Every alias is an event written in the same (atomic, so blocking) Redis
# script, and the metrics travel with every listing and event of the version.
MAX_ALIASES = 32
MAX_METRICS = 256
MAX_METRIC_NAME_CHARS = 128
_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def check_request(
    name: str,
    stage: str,
    parent_version: int,
    step: int,
    aliases: Sequence[str],
    metrics: Mapping[str, float] | None = None,
) -> tuple[str, str, list[str]]:
    """Validate a registration; returns (name, stage, aliases deduplicated). `latest` is
    refused, as by set_alias: it moves to every new version by itself."""
    check_name(name)
    if parent_version < 0:
        raise ValueError(f"parent_version must be >= 0, got {parent_version}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    metrics = metrics or {}
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"{len(metrics)} metrics, over the {MAX_METRICS} one version may have")
    for key, value in metrics.items():
        if not 0 < len(key) <= MAX_METRIC_NAME_CHARS or any(
            ord(char) < 32 or char == "\x7f" for char in key
        ):
            raise ValueError(
                f"metric name {key[:80]!r} is invalid: use 1-{MAX_METRIC_NAME_CHARS} "
                "characters, no control characters"
            )
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} must be a finite number, got {value}")
    if len(aliases) > MAX_ALIASES:
        raise ValueError(f"{len(aliases)} aliases, over the {MAX_ALIASES} one registration may set")
    extra = [check_settable_alias(a) for a in dict.fromkeys(aliases)]
    return name, check_stage(stage), extra


def check_settable_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias == LATEST:
        raise ValueError(f"alias {LATEST!r} moves to every new version by itself; use another")
    return alias


def new_record(
    artifact_uri: str,
    sha256: Mapping[str, str],
    *,
    stage: str,
    parent_version: int,
    step: int,
    metrics: Mapping[str, float] | None,
    owned: bool,
) -> dict[str, Any]:
    """The stored metadata of one version (without its name, version and aliases)."""
    return {
        "artifact_uri": artifact_uri,
        "sha256": dict(sha256),
        "stage": stage,
        "parent_version": parent_version,
        "step": step,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "created_unix": time.time(),
        "owned": owned,  # the store copied the files, so deleting the version removes them
    }


def info_from_record(
    name: str, version: int, record: Mapping[str, Any], aliases: Sequence[str]
) -> CheckpointInfo:
    return CheckpointInfo(
        name=name,
        version=version,
        artifact_uri=record["artifact_uri"],
        sha256=dict(record["sha256"]),
        stage=record["stage"],
        parent_version=int(record["parent_version"]),
        step=int(record["step"]),
        metrics=dict(record["metrics"]),
        created_unix=float(record["created_unix"]),
        aliases=tuple(sorted(aliases)),
    )


class LocalCheckpointStore:
    """A CheckpointStore on a directory or fsspec URL, used in-process (tests, one machine)."""

    def __init__(self, root: str | Path) -> None:
        self.artifacts = ArtifactRoot(str(root))
        self.root = self.artifacts.url

    # -- metadata ------------------------------------------------------------------------

    def _state_url(self, name: str) -> str:
        return join_url(self.root, name, METADATA_FILE)

    def _read(self, name: str) -> dict[str, Any] | None:
        state: dict[str, Any] | None = read_json(self._state_url(name))
        return state

    def _write(self, name: str, state: Mapping[str, Any]) -> None:
        write_atomic(self._state_url(name), json.dumps(state, indent=1).encode())

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        key = join_url(self.root, name)
        with _PROCESS_LOCKS_GUARD:
            process_lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        with process_lock:
            fs, path = url_to_fs(key)
            if not isinstance(fs, LocalFileSystem):
                yield
                return
            fs.makedirs(path, exist_ok=True)
            with open(f"{path}/.lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
                yield

    def _state(self, name: str) -> dict[str, Any]:
        state = self._read(check_name(name))
        if state is None:
            raise CheckpointNotFound(f"no model named {name!r}")
        return state

    @staticmethod
    def _aliases_of(state: Mapping[str, Any], version: int) -> list[str]:
        return [alias for alias, v in state["aliases"].items() if v == version]

    def _info(self, name: str, state: Mapping[str, Any], version: int) -> CheckpointInfo:
        record = state["versions"][str(version)]
        return info_from_record(name, version, record, self._aliases_of(state, version))

    @staticmethod
    def _resolve(name: str, state: Mapping[str, Any], version: int, alias: str) -> int:
        if version:
            if str(version) not in state["versions"]:
                raise CheckpointNotFound(f"{name} has no version {version}")
            return version
        alias = alias or LATEST
        if alias not in state["aliases"]:
            raise CheckpointNotFound(f"{name} has no alias {alias!r}")
        return int(state["aliases"][alias])

    # -- CheckpointStore -----------------------------------------------------------------

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
        in_place: bool = False,
    ) -> CheckpointInfo:
        """Copy source_dir (verified) under the root and register it as the next version;
        in_place registers the files where they are, and deleting never removes them."""
        name, stage, extra_aliases = check_request(
            name, stage, parent_version, step, aliases, metrics
        )
        source = str(source_dir)
        if in_place:
            location, sha256 = source, hash_tree(source)
        else:
            location = self.artifacts.new_location(name)
            sha256 = copy_tree(source, location)
        record = new_record(
            location,
            sha256,
            stage=stage,
            parent_version=parent_version,
            step=step,
            metrics=metrics,
            owned=not in_place,
        )
        try:
            with self._locked(name):
                state = self._read(name) or {"next_version": 1, "aliases": {}, "versions": {}}
                version = int(state["next_version"])
                state["next_version"] = version + 1
                state["versions"][str(version)] = record
                for alias in [LATEST, *extra_aliases]:
                    state["aliases"][alias] = version
                self._write(name, state)  # the commit point
        except BaseException:
            if not in_place:
                self.artifacts.remove(location)
            raise
        return self._info(name, state, version)

    def get(self, name: str, version: int = 0, alias: str = "") -> CheckpointInfo:
        state = self._state(name)
        return self._info(name, state, self._resolve(name, state, version, alias))

    def list(self, name: str = "", stage: str = "") -> list[CheckpointInfo]:
        """Newest first."""
        if name:
            names = [check_name(name)]
        else:
            fs, root = url_to_fs(self.root)
            names = [p.rsplit("/", 2)[-2] for p in fs.glob(f"{root}/*/{METADATA_FILE}")]
        infos = []
        for model in names:
            state = self._read(model)
            if state is None:
                continue
            for version in state["versions"]:
                info = self._info(model, state, int(version))
                if not stage or info.stage == stage:
                    infos.append(info)
        return sorted(infos, key=lambda i: (i.created_unix, i.version), reverse=True)

    def set_alias(self, name: str, version: int, alias: str) -> CheckpointInfo:
        check_settable_alias(alias)
        if version < 1:
            raise ValueError(f"version must be a positive integer, got {version}")
        with self._locked(check_name(name)):
            state = self._state(name)
            self._resolve(name, state, version, "")
            state["aliases"][alias] = version
            self._write(name, state)
        return self._info(name, state, version)

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        """Copy the files into dest (absent or empty), verifying every sha256 first."""
        info = self.get(name, version, alias)
        copy_tree(info.artifact_uri, str(dest), expected=info.sha256, where=info.ref)
        return Path(dest)

    def delete(self, name: str, version: int) -> None:
        """Remove a version; refused (CheckpointInUse) while an alias points at it."""
        with self._locked(check_name(name)):
            state = self._state(name)
            self._resolve(name, state, version, "")
            in_use = self._aliases_of(state, version)
            if in_use:
                raise CheckpointInUse(
                    f"{name}:{version} is in use by alias(es) {', '.join(sorted(in_use))}; "
                    "move them first"
                )
            record = state["versions"].pop(str(version))
            self._write(name, state)
        if record.get("owned"):
            self.artifacts.remove(record["artifact_uri"])
