"""Fixtures of the generator tests: a second tiny model and a checkpoint-store test double."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from astro_core.checkpoints import CheckpointInfo, CheckpointNotFound, IntegrityError
from astro_core.models.tiny import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with other weights (seed 1), standing in for a newer checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-b"), TinyModelSpec(seed=1))


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class DirCheckpointStore:
    """TEST DOUBLE of astro_core.checkpoints.CheckpointStore: versions are plain copies under
    root/<name>/<version>, metadata in memory. The real one is the registry service."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions: dict[str, list[CheckpointInfo]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.pulls = 0

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
        version = len(self.versions.get(name, [])) + 1
        dest = self.root / name / str(version)
        shutil.copytree(source_dir, dest)
        info = CheckpointInfo(
            name,
            version,
            str(dest),
            _sha256_tree(dest),
            stage,
            parent_version,
            step,
            dict(metrics or {}),
            time.time(),
        )
        self.versions.setdefault(name, []).append(info)
        for alias in ["latest", *aliases]:
            self.aliases[(name, alias)] = version
        return info

    def get(self, name: str, version: int = 0, alias: str = "") -> CheckpointInfo:
        if version == 0:
            key = (name, alias or "latest")
            if key not in self.aliases:
                raise CheckpointNotFound(f"{name}@{alias or 'latest'} is not registered")
            version = self.aliases[key]
        infos = self.versions.get(name, [])
        if not 1 <= version <= len(infos):
            raise CheckpointNotFound(f"{name}:{version} is not registered")
        return infos[version - 1]

    def list(self, name: str = "", stage: str = "") -> list[CheckpointInfo]:
        found = [i for n, infos in self.versions.items() if name in ("", n) for i in infos]
        return sorted((i for i in found if stage in ("", i.stage)), key=lambda i: -i.version)

    def set_alias(self, name: str, version: int, alias: str) -> CheckpointInfo:
        info = self.get(name, version)
        self.aliases[(name, alias)] = version
        return info

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        info = self.get(name, version, alias)
        shutil.copytree(info.artifact_uri, dest)
        if _sha256_tree(Path(dest)) != dict(info.sha256):
            raise IntegrityError(f"{info.ref}: files do not match their sha256")
        self.pulls += 1
        return Path(dest)


@pytest.fixture()
def checkpoint_store(
    tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path
) -> DirCheckpointStore:
    """`tiny:1` (the session tiny model, alias "base") and `tiny:2` (other weights, "sft")."""
    store = DirCheckpointStore(tmp_path / "registry")
    store.register("tiny", tiny_model_dir, aliases=["base"])
    store.register("tiny", other_model_dir, stage="sft", aliases=["sft"])
    return store
