"""What StartRun checks against and writes to: datasets, models, trainers, the run's folder.

A client names files on the coordinator's disk, so the coordinator must not become a way to
read or write arbitrary files: datasets are read only under the dataset roots
(services/coordinator/datasets.py), named datasets only from the benchmark folder, and a
run's output folder must lie inside one of the run roots (after resolving symlinks), be new
or empty, and is claimed by writing `run.json` there exclusively.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astro_core.engines.sources import ModelSource, resolve_model
from astro_core.pipeline.spec import ModelSpec, RunSpecError
from astro_core.pipeline.validate import NAMED_SETS, ValidatedRun, WorldUnavailable
from astro_core.problems import Problem
from services.coordinator.datasets import DatasetAccess
from services.coordinator.runs.context import sha256_file, write_atomic

MARKER = "run.json"


def default_benchmark_dir() -> Path:
    """$ASTRO_SHARED_DATA, else ../shared/data beside the code (as the evaluation reads)."""
    env = os.environ.get("ASTRO_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[4] / "shared" / "data"


@dataclass
class CoordinatorWorld:
    """The RunWorld of astro_core.pipeline.validate, on the coordinator."""

    datasets: DatasetAccess
    benchmarks: DatasetAccess
    max_problems: int
    registry: Any = None  # a CheckpointStore, or None
    trainer_check: Callable[[str], object] | None = None  # raises ValueError if unusable

    def read_problems(self, given: str) -> list[Problem]:
        access, name = (
            (self.benchmarks, NAMED_SETS[given]) if given in NAMED_SETS else (self.datasets, given)
        )
        if given in NAMED_SETS and not (access.roots[0] / name).is_file():
            raise ValueError(f"dataset {given!r} is not in the coordinator's benchmark_dir")
        problems = access.problems(name, self.max_problems + 1)
        if len(problems) > self.max_problems:
            raise ValueError(f"{given!r} has more than max_problems ({self.max_problems}) problems")
        return problems

    def check_model(self, model: ModelSpec) -> None:
        if model.path:
            resolve_model(ModelSource(path=model.path), None, "")
            return
        if self.registry is None:
            raise RuntimeError(
                f"{model.describe()} is a registered name, and this coordinator has no "
                "registry (settings.registry_address)"
            )
        import grpc

        try:
            self.registry.get(model.name, version=model.version, alias=model.alias)
        except grpc.RpcError as exc:  # codes the client does not translate: unreachable, ...
            raise WorldUnavailable(f"registry: {exc.code().name}: {exc.details()}") from exc

    def check_trainer_backend(self, name: str) -> None:
        if self.registry is None:
            raise ValueError(
                "training registers checkpoints: set the coordinator's registry_address"
            )
        if self.trainer_check is not None:
            self.trainer_check(name)


@dataclass(frozen=True)
class RunRoots:
    """Folders runs may write to; the first holds runs without an output_uri."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: Sequence[str | Path]) -> RunRoots:
        return cls(tuple(Path(r).expanduser().resolve() for r in roots))

    def resolve(self, given: str, rid: str) -> Path:
        if not given:
            return self.roots[0] / rid
        text = given.removeprefix("file://")
        if "://" in text or "\0" in text:
            raise RunSpecError(
                "output_uri: this coordinator writes runs to local folders (or file:// URLs) "
                "under its run roots"
            )
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.roots[0] / path
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:
            raise RunSpecError(f"output_uri: cannot be resolved: {exc}") from exc
        if not any(resolved.is_relative_to(r) and resolved != r for r in self.roots):
            raise RunSpecError(
                f"output_uri: {given!r} is not a folder inside the coordinator's run roots "
                "(setting run_roots)"
            )
        return resolved

    def claim(self, out: Path, rid: str) -> bool:
        """Make `out` this run's folder: created if needed, refused unless new or empty.
        Returns whether the folder was created now (so a failed start removes only that)."""
        self._not_inside_a_run(out)
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not out.is_dir():
                raise RunSpecError(f"output_uri: {out} is not a folder")
            marker = out / MARKER
            if marker.exists():
                raise RunSpecError(f"output_uri: {out} holds run {_marker_run(marker)} already")
            if any(out.iterdir()):
                raise RunSpecError(f"output_uri: {out} is not empty")
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as handle:
                json.dump({"run_id": rid}, handle)
        except RunSpecError:
            raise
        except FileExistsError as exc:
            raise RunSpecError(f"output_uri: {out} holds another run already") from exc
        except OSError as exc:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise RunSpecError(f"output_uri: cannot write {out}: {exc.strerror}") from exc
        return created

    def _not_inside_a_run(self, out: Path) -> None:
        """Refuse a folder inside another run's folder: that run's stages write their own
        folders there (`<run>/<stage>`), and would mix with, or remove, this run's files."""
        for parent in out.parents:
            if parent in self.roots or not any(parent.is_relative_to(r) for r in self.roots):
                return
            marker = parent / MARKER
            if marker.is_file():
                raise RunSpecError(
                    f"output_uri: {out} is inside the folder of run {_marker_run(marker)}"
                )


def claim_and_write(
    roots: RunRoots, out: Path, rid: str, run: ValidatedRun
) -> tuple[bool, dict[str, str], dict[str, str]]:
    """Claim the run's folder and write its inputs; (created now, input paths, sha256)."""
    created = roots.claim(out, rid)
    try:
        inputs, digests = write_inputs(out, run)
    except BaseException:
        release(out, created)
        raise
    return created, inputs, digests


def _marker_run(marker: Path) -> str:
    try:
        return str(json.loads(marker.read_text()).get("run_id", "?"))
    except (OSError, ValueError):
        return "?"


def release(out: Path, created: bool) -> None:
    """Undo a claim after a failed start: the folder if it was made now, else what we wrote."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    (out / MARKER).unlink(missing_ok=True)
    shutil.rmtree(out / "inputs", ignore_errors=True)


def write_problem_file(path: Path, problems: Sequence[Problem]) -> Path:
    """Problems as JSONL rows (metadata fields, then id, problem, answer)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            for p in problems:
                row = {**p.metadata, "id": p.id, "problem": p.problem, "answer": p.answer}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, write)


def write_inputs(out: Path, run: ValidatedRun) -> tuple[dict[str, str], dict[str, str]]:
    """The run's own inputs as files in its folder (inputs/...), so every stage, on any
    replica and after any restart, reads what StartRun validated. Returns (paths, sha256) by
    kind: problems, rl_prompts, eval.<label>."""
    folder = out / "inputs"
    files: dict[str, Sequence[Problem]] = {}
    if run.problems:
        files["problems"] = run.problems
    if run.rl_prompts:
        files["rl_prompts"] = run.rl_prompts
    for label, problems in run.eval_sets.items():
        files[f"eval.{label}"] = problems
    paths: dict[str, str] = {}
    for kind, rows in files.items():
        name = kind.replace("eval.", "eval/") + ".jsonl"
        paths[kind] = str(write_problem_file(folder / name, rows))
    return paths, {kind: sha256_file(Path(p)) for kind, p in paths.items()}


def spec_digest(spec_json: str, extra: Mapping[str, str] | None = None) -> str:
    import hashlib

    return hashlib.sha256((spec_json + json.dumps(dict(extra or {}))).encode()).hexdigest()
