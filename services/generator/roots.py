"""Which model directories LoadModel may load by path: those under the generator's model roots.

`LoadModel(model=ModelRef(path=...))` names a directory on the generator's disk, which the
generator then reads (config, tokenizer, weights) and serves; without a check that is "read
any directory the process can read". So the path (`~` expanded; a relative one is taken from
the first root) is resolved, symlinks and `..` included, and must then lie under one of
`settings.model_roots` (null: the service's data directory, which holds the pull cache and
the tiny model, and `cache_dir`), and every file in it must resolve under them too (a link
inside must not lead out). A model the generator's own config names (`model.path`,
`engine.model_path`) and the tiny model it builds are the operator's choice: they are always
allowed. A path outside the roots and a path that does not exist get the same answer, so an
error never tells a client what exists where it may not look.

Registered checkpoints (`ModelRef.name`) are pulled by the generator itself into its cache and
are not checked here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A model directory holds tens of files; walking more than this many entries is not loading one.
MAX_ENTRIES = 10_000
PATH_MAX = 4096  # Linux: no longer path names a file


class ModelPathRefused(ValueError):
    """LoadModel's path is not a directory under the model roots (or does not exist)."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _shown(given: str) -> str:
    """The path as an error message shows it: quoted, escaped, and cut short."""
    return repr(given if len(given) <= 200 else given[:200] + "...")


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class ModelRoots:
    """The roots (real paths) and the config's own models (real paths, always allowed)."""

    roots: tuple[str, ...]
    own: frozenset[str]

    @classmethod
    def of(cls, roots: Sequence[str], own: Iterable[str]) -> ModelRoots:
        return cls(tuple(_real(r) for r in roots), frozenset(_real(p) for p in own if p))

    def _refusal(self, given: str) -> ModelPathRefused:
        return ModelPathRefused(
            f"model.path: no model directory {_shown(given)} under the generator's model "
            "roots (setting model_roots)"
        )

    def admits(self, real: str) -> bool:
        return any(_is_within(real, root) for root in self.roots)

    def resolve(self, given: str) -> str:
        """The real path of the model directory `given` names, if LoadModel may load it;
        ModelPathRefused otherwise."""
        if not given or "\0" in given or len(given) > PATH_MAX:
            raise self._refusal(given)
        path = os.path.expanduser(given)
        if not os.path.isabs(path):
            if _real(path) in self.own:  # the config's own model, named as the config does
                return _real(path)
            if not self.roots:
                raise self._refusal(given)
            path = os.path.join(self.roots[0], path)
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError) as exc:
            raise self._refusal(given) from exc
        if real in self.own:
            return real
        if not self.admits(real) or not os.path.isdir(real):
            raise self._refusal(given)
        if os.path.isfile(os.path.join(real, "config.json")):  # else no model: loading says so
            self._check_inside(real, given)
        return real

    def _check_inside(self, real: str, given: str) -> None:
        """Every entry of the directory, links followed, resolves under the roots."""
        seen = 0
        for directory, dirs, files in os.walk(real, followlinks=True):
            for name in (*dirs, *files):
                seen += 1
                if seen > MAX_ENTRIES:
                    raise ModelPathRefused(
                        f"model.path: {_shown(given)} holds more than {MAX_ENTRIES} files and "
                        "folders: not a model directory"
                    )
                entry = os.path.join(directory, name)
                if not self.admits(os.path.realpath(entry)):
                    rel = os.path.relpath(entry, real)
                    raise ModelPathRefused(
                        f"model.path: {_shown(given)}: {rel!r} leads outside the generator's model "
                        "roots (setting model_roots)"
                    )
