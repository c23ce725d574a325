"""RegistryClient: the CheckpointStore of the registry service, over gRPC.

    store = RegistryClient("127.0.0.1:50054")
    info = store.register("tiny", "out/step-100", stage="sft", aliases=["sft"])
    store.pull("tiny", "cache/tiny-3", version=info.version)
    with store.watch("tiny") as events:            # live once watch() returns
        for event in events: ...

Local files (a path, file:// or memory://) are uploaded (UploadCheckpoint), so the server
need not share this machine's filesystem; other fsspec URLs (s3://, gs://, ...), or any
source when `shared_storage=True`, are registered by reference and copied by the server.
Errors come back as astro_core's: CheckpointNotFound, IntegrityError, CheckpointInUse,
ValueError (bad input); other gRPC failures are raised as grpc.RpcError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from astro_core.checkpoints import (
    CheckpointError,
    CheckpointEvent,
    CheckpointInfo,
    CheckpointInUse,
    CheckpointNotFound,
    IntegrityError,
)
from astro_core.checkpoints.artifacts import (
    CHUNK_BYTES,
    StagedTree,
    hash_tree,
    is_client_side,
    iter_tree_chunks,
    list_files,
)
from services.protos.astro.v1 import registry_pb2, registry_pb2_grpc
from services.registry.messages import event_from_message, from_message
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig, client_config_from_env

T = TypeVar("T")
WATCH_START_HEADER = "x-astro-after-event-id"
TRANSFER_TIMEOUT_SECONDS = 6 * 3600.0  # uploads and downloads of big models take a while
WATCH_TIMEOUT_SECONDS = 365 * 86400.0

_ERRORS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.NOT_FOUND: CheckpointNotFound,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
    grpc.StatusCode.FAILED_PRECONDITION: CheckpointInUse,
    grpc.StatusCode.INVALID_ARGUMENT: ValueError,
}


def _translated(exc: grpc.RpcError) -> Exception:
    kind = _ERRORS.get(exc.code())
    return kind(exc.details()) if kind else exc


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as exc:
        raise _translated(exc) from None


class RegistryClient:
    """A CheckpointStore backed by the CheckpointRegistry service."""

    def __init__(
        self,
        target: str | ClientConfig,
        *,
        shared_storage: bool = False,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.config = client_config_from_env(target) if isinstance(target, str) else target
        self.shared_storage = shared_storage
        self.chunk_bytes = chunk_bytes
        self._channel = sync_channel(self.config)
        self.stub = registry_pb2_grpc.CheckpointRegistryStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Upload (or, for shared storage, reference) source_dir as the next version."""
        source = str(source_dir)
        header = registry_pb2.RegisterCheckpointRequest(
            name=name,
            stage=stage,
            parent_version=parent_version,
            step=step,
            metrics=dict(metrics or {}),
            aliases=list(aliases),
        )
        if is_client_side(source) and not (self.shared_storage or in_place):
            return self._upload(header, source)
        if is_client_side(source):
            # The server reads the same files: send what we see so it can verify its copy.
            header.sha256.update(hash_tree(source))
            source = str(Path(source).resolve()) if "://" not in source else source
        header.artifact_uri = source
        header.in_place = in_place
        reply = _call(
            lambda: self.stub.RegisterCheckpoint(header, timeout=TRANSFER_TIMEOUT_SECONDS)
        )
        return from_message(reply)

    def _upload(
        self, header: registry_pb2.RegisterCheckpointRequest, source: str
    ) -> CheckpointInfo:
        list_files(source)  # not a directory, or empty: say so before any call
        failures: list[Exception] = []

        def messages() -> Iterator[registry_pb2.UploadCheckpointRequest]:
            try:
                yield from self._upload_messages(header, source)
            except Exception as exc:  # gRPC would only say "Exception iterating requests!"
                failures.append(exc)
                raise

        try:
            reply = self.stub.UploadCheckpoint(messages(), timeout=TRANSFER_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            if failures:  # reading the files failed: that error, as itself
                raise failures[0] from None
            raise _translated(exc) from None
        return from_message(reply)

    def _upload_messages(
        self, header: registry_pb2.RegisterCheckpointRequest, source: str
    ) -> Iterator[registry_pb2.UploadCheckpointRequest]:
        yield registry_pb2.UploadCheckpointRequest(header=header)
        for rel, data, sha256 in iter_tree_chunks(source, self.chunk_bytes):
            chunk = registry_pb2.FileChunk(path=rel, data=data, sha256=sha256)
            yield registry_pb2.UploadCheckpointRequest(chunk=chunk)

    def get(self, name: str, version: int = 0, alias: str = "") -> CheckpointInfo:
        request = registry_pb2.GetCheckpointRequest(name=name, version=version, alias=alias)
        return from_message(_call(lambda: self.stub.GetCheckpoint(request)))

    def list(self, name: str = "", stage: str = "") -> list[CheckpointInfo]:
        """Newest first (every page)."""
        infos: list[CheckpointInfo] = []
        token = ""
        while True:
            request = registry_pb2.ListCheckpointsRequest(
                name=name, stage=stage, page_size=500, page_token=token
            )
            page = _call(partial(self.stub.ListCheckpoints, request))
            infos.extend(from_message(m) for m in page.checkpoints)
            token = page.next_page_token
            if not token:
                return infos

    def set_alias(self, name: str, version: int, alias: str) -> CheckpointInfo:
        request = registry_pb2.SetAliasRequest(name=name, version=version, alias=alias)
        return from_message(_call(lambda: self.stub.SetAlias(request)))

    def pull(self, name: str, dest: str | Path, version: int = 0, alias: str = "") -> Path:
        """Download into dest (absent or empty); every sha256 is checked before the files
        are put in place, and IntegrityError names the first bad file."""
        request = registry_pb2.GetCheckpointRequest(name=name, version=version, alias=alias)

        def download() -> None:
            info: CheckpointInfo | None = None
            with StagedTree(str(dest)) as staged:
                for message in self.stub.DownloadCheckpoint(
                    request, timeout=TRANSFER_TIMEOUT_SECONDS
                ):
                    if message.WhichOneof("part") == "checkpoint":
                        info = from_message(message.checkpoint)
                        continue
                    staged.add(message.chunk.path, message.chunk.data)
                    if message.chunk.sha256:
                        staged.end_file()
                if info is None:
                    raise IntegrityError(f"{name}: the registry sent no metadata")
                staged.verify(info.sha256, info.ref)  # against the registered digests
                staged.commit()

        _call(download)
        return Path(dest)

    # -- beyond the Protocol ---------------------------------------------------------------

    def delete(self, name: str, version: int) -> None:
        """Remove a version; CheckpointInUse while an alias points at it."""
        request = registry_pb2.GetCheckpointRequest(name=name, version=version)
        _call(lambda: self.stub.DeleteCheckpoint(request))

    def watch(self, name: str = "", after_event_id: str = "", resume: bool = True) -> Watch:
        """Follow new versions and alias moves (of `name`, or all). Live once it returns."""
        return Watch(self.stub, name, after_event_id, resume)


class Watch:
    """An open WatchCheckpoints stream. Iterate for events; close() to stop. When the registry
    restarts (UNAVAILABLE) it reconnects after the last event it delivered, losing none."""

    def __init__(
        self,
        stub: registry_pb2_grpc.CheckpointRegistryStub,
        name: str,
        after_event_id: str,
        resume: bool,
        reconnect_seconds: float = 30.0,
    ) -> None:
        self._stub = stub
        self.name = name
        self.resume = resume
        self.reconnect_seconds = reconnect_seconds
        self.last_event_id = after_event_id
        self._closed = False
        self._call: Any = None
        _call(self._open)

    def _open(self) -> None:
        request = registry_pb2.WatchCheckpointsRequest(
            name=self.name, after_event_id=self.last_event_id
        )
        call = self._stub.WatchCheckpoints(request, timeout=WATCH_TIMEOUT_SECONDS)
        headers = dict(call.initial_metadata() or ())  # returns once the server subscribed
        if WATCH_START_HEADER not in headers:
            for _ in call:  # it ended before subscribing: iterating raises its error
                pass
            raise CheckpointError("the registry ended the watch before it started")
        self.last_event_id = self.last_event_id or headers[WATCH_START_HEADER]
        self._call = call

    def _reopen(self) -> None:
        deadline = time.monotonic() + self.reconnect_seconds
        backoff = 0.1
        while True:
            try:
                self._open()
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def __iter__(self) -> Iterator[CheckpointEvent]:
        return self

    def __next__(self) -> CheckpointEvent:
        while True:
            try:
                message = next(self._call)
            except grpc.RpcError as exc:
                if self._closed:
                    raise StopIteration from None
                if not (self.resume and exc.code() == grpc.StatusCode.UNAVAILABLE):
                    raise _translated(exc) from None
                _call(self._reopen)
                continue
            event = event_from_message(message)
            self.last_event_id = event.event_id
            return event

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
