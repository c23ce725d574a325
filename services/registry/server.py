"""CheckpointRegistry: metadata in Redis (astro:reg:*), files in a directory or fsspec URL.

A registration copies (or receives, with UploadCheckpoint) the files under the artifact root
with a temporary name, verifies every sha256, renames them into place, and only then commits
the metadata in one Lua script: a writer that dies at any point before leaves no version.
Watchers read the Redis stream of events, so each sees every event in commit order and can
resume after a restart from the last event id it got.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from astro_core.checkpoints import (
    LATEST,
    CheckpointError,
    CheckpointInUse,
    CheckpointNotFound,
    IntegrityError,
    check_name,
    check_stage,
)
from astro_core.checkpoints.artifacts import (
    ArtifactRoot,
    StagedTree,
    check_relpath,
    compare_digests,
    copy_tree,
    hash_tree,
    join_url,
    list_files,
    url_to_fs,
)
from astro_core.checkpoints.local import check_request, check_settable_alias, new_record
from astro_core.config import ConfigError
from astro_core.paths import data_dir
from services.protos.astro.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.registry.imports import (
    ImportRoots,
    check_protocol_available,
    check_protocol_known,
)
from services.registry.messages import event_message, info_from_entry, to_message
from services.registry.metadata import RedisMetadata, check_event_id, event_key
from services.runtime.config import parse_settings
from services.runtime.redis_service import attach_redis
from services.runtime.server import ServiceRuntime

T = TypeVar("T")
log = logging.getLogger("astro.registry")
# Initial metadata of WatchCheckpoints: the event id the stream starts after. Once the client
# has it, the subscription is live: nothing committed later is missed.
WATCH_START_HEADER = "x-astro-after-event-id"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Bytes of records a ListCheckpoints page holds at most (besides its first): a page of big
# records would not fit the largest gRPC message, and listing would fail for everyone.
MAX_PAGE_BYTES = 16 << 20
# Of every Redis command; XREAD's block (watch_poll_ms) must end well before it.
REDIS_TIMEOUT_SECONDS = 5.0


class RegistrySettings(BaseModel):
    """The registry's section of ServiceConfig.settings."""

    model_config = ConfigDict(extra="forbid")

    artifact_root: str | None = Field(
        None,
        description="Directory (a PVC in the cluster) or fsspec URL for checkpoint files; "
        "default <data_dir>/checkpoints.",
    )
    key_prefix: str = Field("astro:reg:", description="Prefix of every Redis key it writes.")
    events_maxlen: int = Field(10_000, gt=0, description="Watch events kept (approximately).")
    chunk_bytes: int = Field(
        1 << 20, gt=0, le=16 << 20, description="File bytes per DownloadCheckpoint message."
    )
    watch_poll_ms: int = Field(
        1000,
        gt=0,
        le=4000,
        description="Longest single wait for new events (under the 5 s Redis read timeout).",
    )
    sweep_temporary_hours: float = Field(
        24.0,
        ge=0,
        description="At start, remove `.tmp-` leftovers of dead writers older than this "
        "(local roots); 0 turns the sweep off.",
    )
    import_roots: list[str] = Field(
        default_factory=list,
        description="Directories or fsspec URLs under which RegisterCheckpoint may read "
        "files the server can see (artifact_uri, in_place); empty: uploads only.",
    )
    max_upload_bytes: int = Field(
        1 << 40, gt=0, description="Largest checkpoint one UploadCheckpoint may send (bytes)."
    )
    max_files: int = Field(
        10_000,
        gt=0,
        le=50_000,
        description="Most files one checkpoint may hold (its metadata lists every one).",
    )
    upload_idle_seconds: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="An upload that sends no message for this long is DEADLINE_EXCEEDED and "
        "its staged files removed (else a stalled client holds them while it stays connected).",
    )

    @field_validator("key_prefix")
    @classmethod
    def _owned_prefix(cls, value: str) -> str:
        if not value.startswith("astro:reg:"):
            raise ValueError("key_prefix must start with 'astro:reg:' (the registry's keys)")
        return value

    @field_validator("import_roots")
    @classmethod
    def _roots_readable(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if not root:
                raise ValueError("an import root must not be empty")
            check_protocol_known(root)
        return roots

    @field_validator("artifact_root")
    @classmethod
    def _root_writable(cls, root: str | None) -> str | None:
        return check_protocol_known(root) if root else root

    def check_backends(self) -> None:
        """Raise ConfigError when a configured root's fsspec backend is not installed."""
        for key, url in [("artifact_root", self.artifact_root)] + [
            (f"import_roots[{i}]", root) for i, root in enumerate(self.import_roots)
        ]:
            if url:
                try:
                    check_protocol_available(url)
                except ValueError as exc:
                    raise ConfigError(f"settings.{key}: {exc}") from None


class TooMany(ValueError):
    """A request over one of the registry's limits (RESOURCE_EXHAUSTED)."""


_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (TooMany, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CheckpointNotFound, grpc.StatusCode.NOT_FOUND),
    (CheckpointInUse, grpc.StatusCode.FAILED_PRECONDITION),
    (IntegrityError, grpc.StatusCode.DATA_LOSS),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
    (CheckpointError, grpc.StatusCode.INVALID_ARGUMENT),  # e.g. artifact_uri holds no files
    (ImportError, grpc.StatusCode.FAILED_PRECONDITION),  # an fsspec backend is not installed
    (redis.ConnectionError, grpc.StatusCode.UNAVAILABLE),
    (redis.TimeoutError, grpc.StatusCode.UNAVAILABLE),
]
_SHA256 = re.compile(r"[0-9a-f]{64}")


@asynccontextmanager
async def _reported(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Turn astro_core's errors into gRPC statuses carrying their message (anything else
    becomes INTERNAL in the runtime)."""
    try:
        yield
    except tuple(kind for kind, _ in _STATUS) as exc:
        code = next(code for kind, code in _STATUS if isinstance(exc, kind))
        message = str(exc)
        if isinstance(exc, redis.RedisError):
            message = f"the registry's metadata store is unavailable: {exc}"
        await context.abort(code, message)


async def _paced(
    messages: AsyncIterator[registry_pb2.UploadCheckpointRequest],
    idle_seconds: float,
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[registry_pb2.UploadCheckpointRequest]:
    """The stream's messages, the call aborted when the next one takes over idle_seconds."""
    iterator = aiter(messages)
    while True:
        try:
            message = await asyncio.wait_for(anext(iterator), idle_seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the upload sent nothing for {idle_seconds:g} s (setting upload_idle_seconds)",
            )
        yield message


def check_sha256(digest: str, where: str) -> str:
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, got {digest[:80]!r}")
    return digest


def _check_header(request: registry_pb2.RegisterCheckpointRequest) -> tuple[str, str, list[str]]:
    for rel, digest in request.sha256.items():
        check_sha256(digest, f"sha256[{check_relpath(rel)!r}]")
    return check_request(
        request.name,
        request.stage,
        request.parent_version,
        request.step,
        request.aliases,
        request.metrics,
    )


def _check_get(request: registry_pb2.GetCheckpointRequest) -> tuple[str, int, str]:
    check_name(request.name)
    if request.version < 0:
        raise ValueError(f"version must be >= 0, got {request.version}")
    if request.version:
        return request.name, request.version, ""
    return request.name, 0, check_name(request.alias or LATEST, "alias")


class RegistryServicer(registry_pb2_grpc.CheckpointRegistryServicer):
    def __init__(self, meta: RedisMetadata, artifacts: ArtifactRoot, settings: RegistrySettings):
        self.meta = meta
        self.artifacts = artifacts
        self.settings = settings
        self.import_roots = ImportRoots(settings.import_roots, own=artifacts.url)

    def _check_file_count(self, count: int, where: str) -> None:
        if count > self.settings.max_files:
            raise TooMany(f"{where} holds more than max_files ({self.settings.max_files}) files")

    async def _commit(
        self,
        request: registry_pb2.RegisterCheckpointRequest,
        checked: tuple[str, str, list[str]],
        location: str,
        sha256: Mapping[str, str],
        owned: bool,
    ) -> common_pb2.Checkpoint:
        name, stage, aliases = checked
        record = new_record(
            location,
            sha256,
            stage=stage,
            parent_version=request.parent_version,
            step=request.step,
            metrics=dict(request.metrics),
            owned=owned,
        )
        # Shielded: once the script is sent, a cancelled caller must not leave it half-known.
        entry = await asyncio.shield(self.meta.register(name, record, aliases))
        log.info("registered", extra={"ref": f"{name}:{entry.version}", "uri": location})
        return to_message(info_from_entry(entry))

    async def RegisterCheckpoint(
        self, request: registry_pb2.RegisterCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Checkpoint:
        async with _reported(context):
            self._check_file_count(len(request.sha256), "the sha256 map")
            checked = _check_header(request)
            if not request.artifact_uri:
                raise ValueError("artifact_uri is required (or send the files: UploadCheckpoint)")
            uri = await asyncio.to_thread(self.import_roots.resolve, request.artifact_uri)
            files = await asyncio.to_thread(list_files, uri)
            self._check_file_count(len(files), f"artifact_uri {request.artifact_uri!r}")
            # Before reading any file: with Redis gone, the copy could never be registered.
            await self.meta.check_available()
            declared = dict(request.sha256) or None
            if request.in_place:
                sha256 = await self._hash(uri)
                if declared is not None:
                    compare_digests(declared, sha256, uri)
                return await self._commit(request, checked, uri, sha256, owned=False)
            location = self.artifacts.new_location(checked[0])
            sha256 = await self._copy(uri, location, declared)
            return await self._commit(request, checked, location, sha256, owned=True)
        raise AssertionError("unreachable")  # _reported aborts

    async def _copy(self, uri: str, location: str, declared: dict[str, str] | None) -> Any:
        """copy_tree in a thread. If the caller gives up (cancel, deadline) the copy stops at
        its next chunk and nothing of it is kept."""
        stop = threading.Event()
        copying = _in_own_thread(
            copy_tree, uri, location, declared, uri, self.settings.chunk_bytes, stop.is_set
        )
        try:
            return await asyncio.shield(copying)
        except asyncio.CancelledError:
            stop.set()
            copying.add_done_callback(lambda done: self._discard(done, location))
            raise

    async def _hash(self, uri: str) -> dict[str, str]:
        """hash_tree in a thread; if the caller gives up it stops at its next chunk."""
        stop = threading.Event()
        try:
            return await _in_own_thread(hash_tree, uri, stop.is_set)
        except asyncio.CancelledError:
            stop.set()
            raise

    def _discard(self, copy: asyncio.Future[Any], location: str) -> None:
        """A copy that finished before it saw the stop is removed (off the event loop)."""
        if not copy.cancelled() and copy.exception() is None:
            threading.Thread(target=self.artifacts.remove, args=(location,), daemon=True).start()

    async def UploadCheckpoint(
        self,
        request_iterator: AsyncIterator[registry_pb2.UploadCheckpointRequest],
        context: grpc.aio.ServicerContext,
    ) -> common_pb2.Checkpoint:
        staged: StagedTree | None = None
        try:
            async with _reported(context):
                header: registry_pb2.RegisterCheckpointRequest | None = None
                checked: tuple[str, str, list[str]] = ("", "", [])
                idle = self.settings.upload_idle_seconds
                async for message in _paced(request_iterator, idle, context):
                    part = message.WhichOneof("part")
                    if header is None:
                        if part != "header":
                            raise ValueError("the first message of an upload must be the header")
                        header = message.header
                        self._check_file_count(len(header.sha256), "the header's sha256 map")
                        checked = _check_header(header)
                        if header.artifact_uri or header.in_place:
                            raise ValueError(
                                "an upload sends files: leave artifact_uri and "
                                "in_place unset (or use RegisterCheckpoint)"
                            )
                        # Before taking any file: with Redis gone, it could never be registered.
                        await self.meta.check_available()
                        location = self.artifacts.new_location(checked[0])
                        staged = await asyncio.to_thread(StagedTree, location)
                        continue
                    if part != "chunk" or staged is None:
                        raise ValueError("only the first message of an upload may be a header")
                    chunk = message.chunk
                    if chunk.path != staged.file_in_progress:
                        if staged.file_in_progress:  # every file's last chunk has its sha256
                            raise ValueError(
                                f"file {staged.file_in_progress} ended without its sha256"
                            )
                        self._check_file_count(len(staged.sha256) + 1, "the upload")
                    if staged.bytes_written + len(chunk.data) > self.settings.max_upload_bytes:
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"upload larger than max_upload_bytes "
                            f"({self.settings.max_upload_bytes} bytes)",
                        )
                    await asyncio.to_thread(staged.add, chunk.path, chunk.data)
                    if chunk.sha256:
                        check_sha256(chunk.sha256, f"file {chunk.path}")
                        await asyncio.to_thread(staged.end_file, chunk.sha256)
                if header is None or staged is None:
                    raise ValueError("empty upload: send the header, then the files")
                if not staged.sha256 and not staged.file_in_progress:
                    raise ValueError("an upload needs at least one file after its header")
                if staged.file_in_progress:
                    raise ValueError(f"file {staged.file_in_progress} ended without its sha256")
                if header.sha256:
                    staged.verify(dict(header.sha256), f"upload of {checked[0]}")
                await asyncio.to_thread(staged.commit)
                return await self._commit(header, checked, staged.url, staged.sha256, owned=True)
        finally:
            # A client that vanished mid-upload (cancellation) or sent bad data leaves nothing.
            if staged is not None and not staged.committed:
                await asyncio.to_thread(staged.abort)
        raise AssertionError("unreachable")

    async def GetCheckpoint(
        self, request: registry_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Checkpoint:
        async with _reported(context):
            entry = await self.meta.get(*_check_get(request))
            return to_message(info_from_entry(entry))
        raise AssertionError("unreachable")

    async def ResolveAlias(
        self, request: registry_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Checkpoint:
        if request.version:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "ResolveAlias takes an alias, not a version"
            )
        return await self.GetCheckpoint(request, context)

    async def ListCheckpoints(
        self, request: registry_pb2.ListCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListCheckpointsResponse:
        async with _reported(context):
            if request.name:
                check_name(request.name)
            if request.stage:
                check_stage(request.stage)
            if not 0 <= request.page_size <= MAX_PAGE_SIZE:
                raise ValueError(
                    f"page_size must be in 0..{MAX_PAGE_SIZE}, got {request.page_size}"
                )
            entries, token = await self.meta.list_page(
                request.name,
                request.stage,
                request.page_size or DEFAULT_PAGE_SIZE,
                request.page_token,
                MAX_PAGE_BYTES,
            )
            return registry_pb2.ListCheckpointsResponse(
                checkpoints=[to_message(info_from_entry(e)) for e in entries],
                next_page_token=token,
            )
        raise AssertionError("unreachable")

    async def SetAlias(
        self, request: registry_pb2.SetAliasRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Checkpoint:
        async with _reported(context):
            check_name(request.name)
            check_settable_alias(request.alias)
            if request.version < 1:
                raise ValueError(f"version must be a positive integer, got {request.version}")
            entry = await self.meta.set_alias(request.name, request.version, request.alias)
            return to_message(info_from_entry(entry))
        raise AssertionError("unreachable")

    async def DeleteCheckpoint(
        self, request: registry_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DeleteCheckpointResponse:
        async with _reported(context):
            check_name(request.name)
            if request.version < 1:
                raise ValueError("DeleteCheckpoint needs a version number (aliased ones stay)")
            entry = await self.meta.delete(request.name, request.version)
            if entry.record.get("owned"):
                await asyncio.to_thread(self.artifacts.remove, entry.record["artifact_uri"])
            return registry_pb2.DeleteCheckpointResponse(deleted=True)
        raise AssertionError("unreachable")

    async def DownloadCheckpoint(
        self, request: registry_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.DownloadCheckpointResponse]:
        async with _reported(context):
            entry = await self.meta.get(*_check_get(request))
        info, in_place = info_from_entry(entry), not entry.record.get("owned")
        yield registry_pb2.DownloadCheckpointResponse(checkpoint=to_message(info))
        for rel in sorted(info.sha256):
            url = join_url(info.artifact_uri, rel)
            if in_place and not self.import_roots.admits_file(url):
                # Registered in place, then made a link out of the roots: serve nothing of it.
                await context.abort(
                    grpc.StatusCode.DATA_LOSS,
                    f"{info.ref}: file {rel} now leads outside the registry's import roots",
                )
            try:
                async for data, last in _file_chunks(url, self.settings.chunk_bytes):
                    chunk = registry_pb2.FileChunk(
                        path=rel, data=data, sha256=info.sha256[rel] if last else ""
                    )
                    yield registry_pb2.DownloadCheckpointResponse(chunk=chunk)
            except OSError as exc:
                await context.abort(
                    grpc.StatusCode.DATA_LOSS, f"{info.ref}: file {rel} cannot be read: {exc}"
                )

    async def WatchCheckpoints(
        self, request: registry_pb2.WatchCheckpointsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.CheckpointEvent]:
        async with _reported(context):
            if request.name:
                check_name(request.name)
            after = check_event_id(request.after_event_id)
            newest = await self.meta.last_event_id()
            if after and event_key(after) > event_key(newest):
                # XREAD would wait for it in silence, skipping every event until then.
                raise ValueError(
                    f"after_event_id {after!r} is after the newest event ({newest!r}): "
                    "not an id this registry gave"
                )
            after = after or newest
        await context.send_initial_metadata(((WATCH_START_HEADER, after),))
        # Redis failing mid-watch is UNAVAILABLE, which the client's Watch resumes from.
        async with _reported(context):
            while True:
                for event in await self.meta.read_events(after, self.settings.watch_poll_ms):
                    after = event.event_id
                    if not request.name or event.entry.name == request.name:
                        yield event_message(event)


def _in_own_thread(work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """work(*args) in a thread of its own. A copy or hash of many GB must not hold one of the
    event loop's shared executor threads, which every upload and download chunk waits for."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if done.set_running_or_notify_cancel():
            try:
                done.set_result(work(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting call
                done.set_exception(exc)

    threading.Thread(target=run, name="registry-copy", daemon=True).start()
    return asyncio.wrap_future(done)


async def _file_chunks(url: str, chunk_bytes: int) -> AsyncIterator[tuple[bytes, bool]]:
    """(data, is_last) for one file, read off the event loop; an empty file is one chunk."""
    fs, path = url_to_fs(url)
    handle: Any = await asyncio.to_thread(fs.open, path, "rb")
    try:
        data = await asyncio.to_thread(handle.read, chunk_bytes)
        while True:
            following = await asyncio.to_thread(handle.read, chunk_bytes) if data else b""
            yield data, not following
            if not following:
                return
            data = following
    finally:
        await asyncio.to_thread(handle.close)


async def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    settings = parse_settings(RegistrySettings, runtime.config.settings)
    settings.check_backends()
    handle = await attach_redis(runtime)
    client = aioredis.Redis.from_url(
        handle.url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    runtime.on_shutdown(client.aclose)
    root = settings.artifact_root or str(
        Path(runtime.config.data_dir or data_dir()) / "checkpoints"
    )
    artifacts = ArtifactRoot(root)
    if settings.sweep_temporary_hours:
        swept = await asyncio.to_thread(
            artifacts.sweep_temporary, settings.sweep_temporary_hours * 3600
        )
        if swept:
            log.info("removed %d leftovers of dead writers", len(swept), extra={"paths": swept})
    meta = RedisMetadata(client, settings.key_prefix, settings.events_maxlen)
    servicer = RegistryServicer(meta, artifacts, settings)
    registry_pb2_grpc.add_CheckpointRegistryServicer_to_server(servicer, runtime.server)
    return [registry_pb2.DESCRIPTOR.services_by_name["CheckpointRegistry"].full_name]
