"""Which server-side files the registry may read: sources under its configured import roots.

`RegisterCheckpoint` names files by URL (`artifact_uri`), which the registry then copies, or
registers where they are (`in_place`) and serves to anyone who downloads them. Without a
check that is "read any directory the registry process can read". So a source must lie under
one of `settings.import_roots` (none by default: uploads only). Local paths are compared after
resolving symlinks, for the directory and for every file in it; other URLs (s3://bucket/...)
by protocol and normalised path. A source outside the roots and a missing one get the same
answer, so the check reveals nothing about what exists where.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence

import fsspec
from fsspec.registry import known_implementations, registry

from astro_core.checkpoints.artifacts import list_files

LOCAL_PROTOCOLS = {None, "file", "local"}


class SourceRefused(ValueError):
    """A server-side source is not readable under the import roots (or does not exist)."""


def check_protocol_known(url: str) -> str:
    """Return url, or raise ValueError when fsspec knows no filesystem for its protocol.

    Settings are checked with this (a typo such as `s4://` is refused wherever the config is
    read); whether the backend is installed is checked when the registry starts.
    """
    protocol = _split(url)[0]
    if protocol is not None and protocol not in LOCAL_PROTOCOLS:
        name = protocol.split("::")[0]
        if name not in registry and name not in known_implementations:
            raise ValueError(f"{url}: no filesystem is known for {protocol}://")
    return url


def check_protocol_available(url: str) -> str:
    """Return url, or raise ValueError when its fsspec backend is not installed or unknown."""
    protocol = _split(url)[0]
    if protocol is not None and protocol not in LOCAL_PROTOCOLS:
        try:
            fsspec.get_filesystem_class(protocol.split("::")[0])
        except (ImportError, ValueError) as exc:
            raise ValueError(f"{url}: no filesystem for {protocol}:// ({exc})") from None
    return url


def _split(url: str) -> tuple[str | None, str]:
    protocol, path = fsspec.core.split_protocol(url)
    return protocol, path


class ImportRoots:
    """The import roots of a registry; `resolve(uri)` admits a source or raises SourceRefused.

    `own` is the registry's artifact root. A source in it (or holding it) is refused even
    when an import root contains it: registered in place, its files would be removed with
    the version that owns them, and the whole root would expose every checkpoint at once.
    """

    def __init__(self, roots: Sequence[str], own: str | None = None) -> None:
        split = [_split(root) for root in roots]
        self.local = [os.path.realpath(path) for proto, path in split if proto in LOCAL_PROTOCOLS]
        self.remote = [
            (protocol, _normalised(path))
            for protocol, path in split
            if protocol not in LOCAL_PROTOCOLS
        ]
        self.own: tuple[str | None, str] | None = None
        if own:
            protocol, path = _split(own)
            local = protocol in LOCAL_PROTOCOLS
            self.own = (None, os.path.realpath(path)) if local else (protocol, _normalised(path))

    def _check_not_own(self, protocol: str | None, path: str, uri: str) -> None:
        if self.own is None or self.own[0] != protocol:
            return
        if _is_within(path, self.own[1]) or _is_within(self.own[1], path):
            raise SourceRefused(
                f"artifact_uri {uri!r} overlaps the registry's own artifact root: to copy a "
                "registered version, pull it and register the copy"
            )

    def _refusal(self, uri: str) -> SourceRefused:
        if not self.local and not self.remote:
            return SourceRefused(
                "this registry takes uploads only (settings.import_roots is empty): send the "
                "files with UploadCheckpoint (`astro ckpt register` without --shared-storage)"
            )
        return SourceRefused(
            f"artifact_uri {uri!r} is not a directory under the registry's import roots"
        )

    def resolve(self, uri: str) -> str:
        """The source to read: for a local path its real path (symlinks resolved)."""
        if any(ord(char) < 32 for char in uri):
            raise self._refusal(uri)  # no path holds a NUL (os.path says "embedded null byte")
        protocol, path = _split(uri)
        if protocol in LOCAL_PROTOCOLS:
            return self._resolve_local(uri, path)
        normalised = _normalised(path)
        for root_protocol, root in self.remote:
            if protocol == root_protocol and _is_within(normalised, root):
                self._check_not_own(protocol, normalised, uri)
                return f"{protocol}://{normalised}"
        raise self._refusal(uri)

    def _resolve_local(self, uri: str, path: str) -> str:
        real = os.path.realpath(path)
        if not self._admits(real) or not os.path.isdir(real):
            raise self._refusal(uri)
        self._check_not_own(None, real, uri)
        for rel in list_files(real):
            # A link inside the directory must not lead out of the roots (or into the
            # registry's own files) either.
            target = os.path.realpath(os.path.join(real, rel))
            if not self._admits(target):
                raise SourceRefused(f"{uri}: {rel} leads outside the registry's import roots")
            self._check_not_own(None, target, f"{uri}: {rel}")
        return real

    def _admits(self, real: str) -> bool:
        return any(_is_within(real, root) for root in self.local)

    def admits_file(self, uri: str) -> bool:
        """For files already registered in place: a local file must still resolve inside."""
        protocol, path = _split(uri)
        if protocol not in LOCAL_PROTOCOLS:
            return True  # object stores have no symlinks
        return self._admits(os.path.realpath(path))


def _normalised(path: str) -> str:
    """`bucket/a/../b` -> `bucket/b`; never climbs above the first part."""
    return posixpath.normpath("/" + path).lstrip("/")


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
