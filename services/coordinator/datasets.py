"""Reading the dataset file a StartSearch names, and nothing else.

A client names a file on the coordinator's disk, so the coordinator must not become a way to
read arbitrary files: the path (relative ones are taken from the first root) is resolved,
symlinks included, and must then lie under one of the configured dataset roots and be a
regular file of at most `max_bytes`. A path outside the roots and a path that does not exist
get the same answer, so an error never tells a client what exists where it may not look.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astro_core.problems import Problem, problems_from_lines


class DatasetError(ValueError):
    """A dataset_path that cannot be read; the message starts with `dataset_path:`."""


@dataclass(frozen=True)
class DatasetAccess:
    """Where datasets may be read from, and how much of one."""

    roots: tuple[Path, ...]
    max_bytes: int

    @classmethod
    def of(cls, roots: Sequence[str | Path], max_bytes: int) -> DatasetAccess:
        return cls(tuple(Path(r).expanduser().resolve() for r in roots), max_bytes)

    def resolve(self, given: str) -> Path:
        """The file `given` names, if it lies under a root; DatasetError otherwise."""
        unknown = DatasetError(
            f"dataset_path: no dataset {given!r} in the coordinator's dataset roots "
            "(setting dataset_roots)"
        )
        if not self.roots or "\0" in given:
            raise unknown
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = self.roots[0] / path
        try:
            resolved = path.resolve()
            if not any(resolved.is_relative_to(root) for root in self.roots):
                raise unknown
            if not resolved.exists():
                raise unknown
        except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
            raise unknown from exc
        return resolved

    def read(self, given: str) -> str:
        """The text of the dataset file `given` names, read only if it is allowed."""
        path = self.resolve(given)
        try:
            # O_NONBLOCK: a FIFO swapped in after the checks must not block the open.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            raise DatasetError(f"dataset_path: cannot be read: {exc.strerror}") from exc
        too_big = DatasetError(
            f"dataset_path: the file has more than max_dataset_bytes ({self.max_bytes}) "
            "bytes; split it or raise the setting"
        )
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DatasetError(f"dataset_path: {given!r} is not a regular file")
            if info.st_size > self.max_bytes:
                raise too_big
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read(self.max_bytes + 1)  # the file may have grown since fstat
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            raise too_big
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"dataset_path: not UTF-8 text ({exc.reason})") from exc

    def problems(self, given: str, limit: int | None) -> list[Problem]:
        """The first `limit` problems (None: all) of the dataset `given` names."""
        text = self.read(given)
        try:
            return list(problems_from_lines(text.splitlines(), given, limit))
        except ValueError as exc:
            raise DatasetError(f"dataset_path: {exc}") from exc
