"""Checkpoint files on any fsspec filesystem: sha256 of every file, atomic saves, verified copies.

A checkpoint directory is written under a temporary sibling name (`.tmp-...`) and renamed into
place only once every file is written and hashed, so a crash mid-save leaves a temporary
directory, never a half checkpoint under its final name. On a local filesystem files are
fsynced and the rename is atomic (`os.rename`); on object stores, which have no directories to
rename, what makes a checkpoint exist is the registry's metadata commit, which comes after.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from astro_core.checkpoints import CheckpointError, IntegrityError

CHUNK_BYTES = 1 << 20
TMP_PREFIX = ".tmp-"
# Storage only this process (or this machine) can read: a remote registry cannot see it.
CLIENT_SIDE_PROTOCOLS = {"file", "local", "memory"}


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, str(path).rstrip("/") or "/"


def join_url(base: str, *parts: str) -> str:
    """`base/part/...` that keeps `memory://` style roots intact."""
    return "/".join([base if base.endswith("://") else base.rstrip("/"), *parts])


def is_client_side(url: str) -> bool:
    """True for a local path or in-memory URL, which a server elsewhere cannot read."""
    return fsspec.utils.get_protocol(url) in CLIENT_SIDE_PROTOCOLS


MAX_PATH_PARTS = 32
MAX_PART_BYTES = 255  # what common filesystems allow for one name
# A whole path: a checkpoint's metadata lists every path, and must fit one gRPC message.
MAX_PATH_BYTES = 1024


def check_relpath(rel: str) -> str:
    """A file path inside a checkpoint: relative, "/"-separated, no "." or ".." parts, no
    control characters, no "::", at most MAX_PATH_PARTS parts of at most MAX_PART_BYTES
    each and MAX_PATH_BYTES in all."""
    parts = rel.split("/")
    if not rel or "\\" in rel or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"file path {rel[:80]!r} is invalid: it must be relative, '/'-separated, "
            "without empty, '.' or '..' parts"
        )
    if any(ord(char) < 32 or char == "\x7f" for char in rel):
        raise ValueError(f"file path {rel[:80]!r} is invalid: it holds a control character")
    if "::" in rel:
        # fsspec reads `a::b` as a chain of URLs: such a file could never be read back.
        raise ValueError(f"file path {rel[:80]!r} is invalid: it holds '::'")
    if (
        len(parts) > MAX_PATH_PARTS
        or any(len(part.encode()) > MAX_PART_BYTES for part in parts)
        or len(rel.encode()) > MAX_PATH_BYTES
    ):
        raise ValueError(
            f"file path {rel[:80]!r}... is invalid: at most {MAX_PATH_PARTS} parts of at "
            f"most {MAX_PART_BYTES} bytes each, {MAX_PATH_BYTES} bytes in all"
        )
    return rel


def compare_digests(expected: Mapping[str, str], actual: Mapping[str, str], where: str) -> None:
    """Raise IntegrityError naming the first file that is missing, extra or different."""
    missing = sorted(set(expected) - set(actual))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise IntegrityError(f"{where}: file {missing[0]} is missing{more}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise IntegrityError(f"{where}: unexpected file {extra[0]}{more}")
    for rel in sorted(expected):
        if expected[rel] != actual[rel]:
            raise IntegrityError(
                f"{where}: sha256 mismatch for {rel}: expected {expected[rel][:16]}..., "
                f"got {actual[rel][:16]}..."
            )


def list_files(url: str) -> list[str]:
    """Relative paths of every file under the directory `url`, sorted."""
    fs, root = url_to_fs(url)
    if not fs.isdir(root):
        raise CheckpointError(f"{url} is not a directory")
    files = sorted(posixpath.relpath(str(p), root) for p in fs.find(root))
    if not files:
        raise CheckpointError(f"{url} holds no files")
    return files


def read_chunks(url: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            yield chunk


def iter_tree_chunks(
    url: str, chunk_bytes: int = CHUNK_BYTES, stop: Callable[[], bool] | None = None
) -> Iterator[tuple[str, bytes, str]]:
    """(path, data, sha256) for every file in chunks; sha256 is set on a file's last chunk
    only. An empty file is one empty chunk. `stop` is asked before each chunk: once true,
    CopyStopped is raised."""
    for rel in list_files(url):
        digest = hashlib.sha256()
        pending: bytes | None = None
        for chunk in read_chunks(join_url(url, rel), chunk_bytes):
            if stop is not None and stop():
                raise CopyStopped(f"reading {url} was stopped")
            if pending is not None:
                yield rel, pending, ""
            digest.update(chunk)
            pending = chunk
        yield rel, pending or b"", digest.hexdigest()


def hash_tree(url: str, stop: Callable[[], bool] | None = None) -> dict[str, str]:
    """sha256 hex digest of every file under `url`, keyed by relative path (`stop`: as for
    iter_tree_chunks)."""
    return {rel: sha for rel, _, sha in iter_tree_chunks(url, stop=stop) if sha}


def write_atomic(url: str, data: bytes) -> None:
    """Replace a small file (e.g. metadata) so readers see the old or the new one, never half."""
    fs, path = url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)  # one PUT: atomic on object stores and in memory
        return
    tmp = f"{path}{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(url: str) -> Any:
    fs, path = url_to_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


class CopyStopped(CheckpointError):
    """A copy (or hashing) was asked to stop (its requester gave up); nothing of it was kept."""


class StagedTree:
    """A directory being written under a temporary name, hashed as it is written.

    with StagedTree(url) as staged:
        staged.write_file("config.json", [b"..."])
        staged.verify(expected, "tiny:3")   # optional
        staged.commit()                    # rename into place
    # leaving the block without commit() (e.g. on an error) removes the temporary files
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.final = url_to_fs(url)
        if self.fs.exists(self.final) and (
            not self.fs.isdir(self.final) or self.fs.find(self.final)
        ):
            raise CheckpointError(f"destination {url} already exists and is not empty")
        parent, base = posixpath.split(self.final)
        self.tmp = f"{parent}/{TMP_PREFIX}{base}-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(self.tmp, exist_ok=True)
        self.sha256: dict[str, str] = {}
        self.bytes_written = 0
        self.committed = False
        self.aborted = False
        self._rel = ""
        self._file: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self._dirs: set[str] = set()  # directories the files written so far lie in
        # A server may abort from another thread while a write is in flight: one at a time.
        self._lock = threading.RLock()

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def file_in_progress(self) -> str:
        """The file started but not yet ended ("" when none)."""
        return self._rel if self._file is not None else ""

    def add(self, rel: str, data: bytes) -> None:
        """Append data to file `rel`, starting it if it is not the file in progress."""
        with self._lock:
            self._add(rel, data)

    def _add(self, rel: str, data: bytes) -> None:
        if self.aborted or self.committed:
            raise CheckpointError(f"{self.url} is no longer being written")
        if self._file is None or rel != self._rel:
            if self._file is not None:
                self.end_file()
            check_relpath(rel)
            if rel in self.sha256:
                raise ValueError(f"file {rel} was sent twice or its chunks were not consecutive")
            self._check_no_clash(rel)
            path = f"{self.tmp}/{rel}"
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self._rel, self._file, self._digest = rel, self.fs.open(path, "wb"), hashlib.sha256()
        assert self._file is not None
        self._file.write(data)
        self._digest.update(data)
        self.bytes_written += len(data)

    def _check_no_clash(self, rel: str) -> None:
        """A file may not also be a directory of another file (`a` and `a/b`)."""
        parents = ["/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)]
        if rel in self._dirs:
            raise ValueError(f"file path {rel!r} is also the directory of another file")
        clash = next((p for p in parents if p in self.sha256 or p == self._rel), None)
        if clash is not None:
            raise ValueError(f"file path {rel!r} lies inside the file {clash!r}")
        self._dirs.update(parents)

    def end_file(self, expected_sha256: str = "") -> str:
        """Close the file in progress; raise IntegrityError if it differs from expected."""
        with self._lock:
            return self._end_file(expected_sha256)

    def _end_file(self, expected_sha256: str) -> str:
        if self._file is None:
            raise ValueError("no file is being written")
        if self.local:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        digest = self._digest.hexdigest()
        self.sha256[self._rel] = digest
        if expected_sha256 and expected_sha256 != digest:
            raise IntegrityError(
                f"sha256 mismatch for {self._rel}: sender says {expected_sha256[:16]}..., "
                f"received {digest[:16]}..."
            )
        return digest

    def write_file(self, rel: str, chunks: Iterable[bytes]) -> str:
        self.add(rel, b"")
        for chunk in chunks:
            self.add(rel, chunk)
        return self.end_file()

    def verify(self, expected: Mapping[str, str], where: str) -> None:
        if self._file is not None:
            self.end_file()
        compare_digests(expected, self.sha256, where)

    def commit(self) -> str:
        """Rename the finished directory into place; returns its URL."""
        with self._lock:
            return self._commit()

    def _commit(self) -> str:
        if self.aborted:
            raise CheckpointError(f"{self.url} was aborted")
        if self._file is not None:
            self._end_file("")
        if not self.sha256:
            raise CheckpointError(f"nothing was written for {self.url}")
        if self.local:
            os.rename(self.tmp, self.final)  # atomic; replaces an empty directory
            _fsync_dir(posixpath.dirname(self.final))
        else:
            if self.fs.exists(self.final):
                self.fs.rm(self.final, recursive=True)  # empty, checked in __init__
            self.fs.mv(self.tmp, self.final, recursive=True)
        self.committed = True
        return self.url

    def abort(self) -> None:
        """Remove the temporary files; later writes fail."""
        with self._lock:
            self.aborted = True
            if self._file is not None:
                self._file.close()
                self._file = None
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp, recursive=True)

    def __enter__(self) -> StagedTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.abort()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_tree(
    src_url: str,
    dest_url: str,
    expected: Mapping[str, str] | None = None,
    where: str = "",
    chunk_bytes: int = CHUNK_BYTES,
    stop: Callable[[], bool] | None = None,
) -> dict[str, str]:
    """Copy every file of src into dest atomically, hashing on the way; with `expected`,
    the copy is verified (IntegrityError names the file) before it is put in place. `stop`
    is asked before each chunk and before the rename: once true, the copy is removed and
    CopyStopped raised."""

    def chunks(rel: str) -> Iterator[bytes]:
        for chunk in read_chunks(join_url(src_url, rel), chunk_bytes):
            if stop is not None and stop():
                raise CopyStopped(f"the copy of {src_url} was stopped")
            yield chunk

    with StagedTree(dest_url) as staged:
        for rel in list_files(src_url):
            staged.write_file(rel, chunks(rel))
        if expected is not None:
            staged.verify(expected, where or src_url)
        if stop is not None and stop():
            raise CopyStopped(f"the copy of {src_url} was stopped")
        staged.commit()
    return staged.sha256


class ArtifactRoot:
    """Where a store keeps checkpoint files: `<root>/<name>/<utc time>-<random>/`."""

    def __init__(self, url: str) -> None:
        self.url = url if url.endswith("://") else url.rstrip("/")

    def new_location(self, name: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return join_url(self.url, name, f"{stamp}-{uuid.uuid4().hex[:8]}")

    def remove(self, url: str) -> None:
        fs, path = url_to_fs(url)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def sweep_temporary(self, older_than_seconds: float) -> list[str]:
        """Remove `.tmp-…` leftovers of writers that died, on a local root; returns them.
        Only old ones: a younger one may belong to an upload still running elsewhere."""
        fs, root = url_to_fs(self.url)
        if not isinstance(fs, LocalFileSystem) or not os.path.isdir(root):
            return []
        cutoff = time.time() - older_than_seconds
        removed = []
        for leftover in sorted(Path(root).glob(f"*/{TMP_PREFIX}*")):
            if leftover.lstat().st_mtime < cutoff:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(str(leftover))
        return removed
