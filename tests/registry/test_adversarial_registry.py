"""The registry against a hostile or careless client: bounded metadata, uploads that lie,
page tokens and event ids it never gave, a Redis that goes away, sources in its own storage,
and callers that give up. Each refusal names what is wrong and leaves nothing stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

import astro_core.checkpoints.artifacts as artifacts_module
from astro_core.config import ConfigError
from services.protos.astro.v1 import registry_pb2, registry_pb2_grpc
from services.registry import metadata as registry_metadata
from services.registry import server as registry_server
from services.registry.client import RegistryClient
from services.registry.server import RegistrySettings, register
from services.runtime.client import sync_channel
from services.runtime.config import parse_settings
from services.runtime.redis_store import RedisHandle, connect_redis
from services.testing import ServiceThread
from tests.registry.conftest import RegistryEnv, artifact_dirs, make_tree
from tests.rpc import refused

Header = registry_pb2.RegisterCheckpointRequest
Upload = registry_pb2.UploadCheckpointRequest
Chunk = registry_pb2.FileChunk


def stub_of(service: ServiceThread) -> registry_pb2_grpc.CheckpointRegistryStub:
    channel = sync_channel(service.client_config(retry_attempts=1))
    return registry_pb2_grpc.CheckpointRegistryStub(channel)


def upload(header: registry_pb2.RegisterCheckpointRequest, *files: tuple[str, bytes]) -> Any:
    """An upload's messages: the header, then each file in one chunk with its sha256."""
    yield Upload(header=header)
    for path, data in files:
        yield Upload(chunk=Chunk(path=path, data=data, sha256=hashlib.sha256(data).hexdigest()))


def settled_dirs(root: Path, timeout: float = 30) -> list[Path]:
    """artifact_dirs(root) once no `.tmp-` one is left (a refused upload's files are removed
    just after the refusal is sent), or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while any(d.name.startswith(".tmp-") for d in artifact_dirs(root)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return artifact_dirs(root)


def started(env: RegistryEnv, **settings: Any) -> ServiceThread:
    config = env.config()
    config.settings.update(settings)
    return ServiceThread("registry", register, config).start()


def use_one_shared_thread(service: ServiceThread) -> None:
    """Give the service's event loop a default executor of one thread: as busy as the
    shared executor of a machine with few cores under load."""

    async def replace() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

    service.run(replace())


@pytest.fixture
def slow_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every chunk read from a source takes 0.2 s; returns when each read ended."""
    reads: list[float] = []
    original = artifacts_module.read_chunks

    def slow(url: str, chunk_bytes: int = artifacts_module.CHUNK_BYTES) -> Iterator[bytes]:
        for chunk in original(url, chunk_bytes):
            time.sleep(0.2)
            reads.append(time.monotonic())
            yield chunk

    monkeypatch.setattr(artifacts_module, "read_chunks", slow)
    return reads


def listed_pages(stub: registry_pb2_grpc.CheckpointRegistryStub, **fields: Any) -> list[list[int]]:
    """The versions of each ListCheckpoints page, following the tokens to the end."""
    pages, token = [], ""
    while True:
        page = stub.ListCheckpoints(registry_pb2.ListCheckpointsRequest(page_token=token, **fields))
        pages.append([c.version for c in page.checkpoints])
        token = page.next_page_token
        if not token:
            return pages


def test_aliases_and_metrics_of_one_registration_are_bounded(
    registry: ServiceThread, redis_handle: RedisHandle
) -> None:
    """Regression: 200,000 aliases made one Lua script of 200,000 XADDs that blocked Redis
    for everyone (the call ended UNAVAILABLE, then the version appeared anyway); a 1 MB
    metric name was stored and sent with every listing until a page outgrew gRPC's limit."""
    stub = stub_of(registry)
    headers = {
        "200000 aliases, over the 32": Header(name="m", aliases=[f"a{i}" for i in range(200_000)]),
        "1000 metrics, over the 256": Header(name="m", metrics={f"m{i}": 1.0 for i in range(1000)}),
        "metric name 'kkkk": Header(name="m", metrics={"k" * 1_000_000: 1.0}),
        "metric name '\\x1b[2J'": Header(name="m", metrics={"\x1b[2J": 1.0}),
        "metric name ''": Header(name="m", metrics={"": 1.0}),
    }
    for words, header in headers.items():
        began = time.monotonic()
        details = refused(stub.UploadCheckpoint, upload(header, ("a", b"1")), timeout=60)
        assert words in details, details
        assert time.monotonic() - began < 5, words
    assert redis_handle.client.ping()
    assert not stub.ListCheckpoints(registry_pb2.ListCheckpointsRequest()).checkpoints
    # the largest allowed go through
    allowed = Header(
        name="m",
        aliases=[f"a{i}" for i in range(32)],
        metrics={f"reward/{'x' * 119}{i:02}": 0.5 for i in range(10)},
    )
    assert stub.UploadCheckpoint(upload(allowed, ("a", b"1")), timeout=60).version == 1


def test_an_upload_that_lies_about_its_files_is_refused_and_leaves_nothing(
    registry_env: RegistryEnv,
) -> None:
    """Regression: a file followed by another without its sha256 was registered unverified;
    a path holding '::' was registered but could never be downloaded (fsspec reads it as a
    chain of URLs); an upload of any number of files was taken (each is listed in the
    metadata every Get, List and Watch sends)."""
    service = started(registry_env, max_files=3)
    try:
        stub = stub_of(service)
        unverified = [
            Upload(header=Header(name="m")),
            Upload(chunk=Chunk(path="a.bin", data=b"never checked")),
            Upload(chunk=Chunk(path="b.bin", data=b"2", sha256=hashlib.sha256(b"2").hexdigest())),
        ]
        details = refused(stub.UploadCheckpoint, iter(unverified))
        assert details == "file a.bin ended without its sha256"
        details = refused(stub.UploadCheckpoint, upload(Header(name="m"), ("a::b", b"1")))
        assert details == "file path 'a::b' is invalid: it holds '::'"
        files = [(f"f{i}", b"x") for i in range(4)]
        details = refused(
            stub.UploadCheckpoint,
            upload(Header(name="m"), *files),
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert details == "the upload holds more than max_files (3) files"
        listed = {f"f{i}": "0" * 64 for i in range(4)}
        details = refused(
            stub.UploadCheckpoint,
            upload(Header(name="m", sha256=listed), ("f0", b"x")),
            code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert "max_files (3)" in details
        assert settled_dirs(Path(registry_env.artifact_root)) == []
        assert stub.UploadCheckpoint(upload(Header(name="m"), *files[:3])).version == 1
    finally:
        service.stop()


def test_an_upload_that_stalls_is_ended_and_leaves_nothing(registry_env: RegistryEnv) -> None:
    """Regression: a client that sent a header and a chunk and then nothing, with no
    deadline, held its staged files for as long as it stayed connected (hours, with
    keepalive). Now the upload ends after upload_idle_seconds without a message, and its
    files are removed; a later upload that keeps sending is served."""
    service = started(registry_env, upload_idle_seconds=0.5)
    release = threading.Event()
    try:
        stub = stub_of(service)

        def stalling() -> Iterator[Any]:
            yield Upload(header=Header(name="m"))
            yield Upload(chunk=Chunk(path="a.bin", data=b"first part"))
            release.wait(30)  # the client is still there, sending nothing

        started_at = time.monotonic()
        details = refused(stub.UploadCheckpoint, stalling(), code=grpc.StatusCode.DEADLINE_EXCEEDED)
        assert details == "the upload sent nothing for 0.5 s (setting upload_idle_seconds)"
        assert time.monotonic() - started_at < 10
        assert settled_dirs(Path(registry_env.artifact_root)) == []
        assert stub.UploadCheckpoint(upload(Header(name="m"), ("a.bin", b"1"))).version == 1
    finally:
        release.set()
        service.stop()
    with pytest.raises(ConfigError, match="upload_idle_seconds"):
        parse_settings(RegistrySettings, {"upload_idle_seconds": 0})


def test_page_tokens_from_another_listing_are_refused(
    client: RegistryClient, registry: ServiceThread, tmp_path: Path
) -> None:
    """Regression: a token is a position in one listing's order (versions of one name, or
    the global sequence); used with other filters it silently paged from a wrong place."""
    for i in range(3):
        client.register("a", make_tree(tmp_path / f"a{i}", files=1, size=8))
        client.register("b", make_tree(tmp_path / f"b{i}", files=1, size=8), stage="sft")
    stub = stub_of(registry)
    listing = registry_pb2.ListCheckpointsRequest
    of_all = stub.ListCheckpoints(listing(page_size=2)).next_page_token
    of_a = stub.ListCheckpoints(listing(name="a", page_size=2)).next_page_token
    of_sft = stub.ListCheckpoints(listing(stage="sft", page_size=2)).next_page_token
    for request in (
        listing(name="a", page_token=of_all),
        listing(page_token=of_a),
        listing(name="b", page_token=of_a),
        listing(name="a", stage="sft", page_token=of_a),
        listing(page_token=of_sft),
        listing(page_token="3"),  # a bare position, forged
    ):
        details = refused(stub.ListCheckpoints, request)
        assert details.startswith(f"page_token {request.page_token!r} did not come from"), details
    rest = stub.ListCheckpoints(listing(name="a", page_size=2, page_token=of_a))
    assert [c.version for c in rest.checkpoints] == [1] and not rest.next_page_token


def test_a_listing_page_stops_before_it_outgrows_a_message(
    client: RegistryClient, registry: ServiceThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a page held page_size records whatever their size, so a few versions with
    many files made every ListCheckpoints fail (RESOURCE_EXHAUSTED "Sent message larger
    than max") for everyone. Here the page budget is shrunk to about one record."""
    for i in range(3):
        client.register("m", make_tree(tmp_path / f"s{i}", files=20, size=8, seed=str(i)))
    monkeypatch.setattr(registry_server, "MAX_PAGE_BYTES", 2000)
    assert listed_pages(stub_of(registry)) == [[3], [2], [1]]


def test_a_filtered_listing_looks_at_a_bounded_number_of_versions_a_page(
    client: RegistryClient, registry: ServiceThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: under a stage filter a page read the index page_size versions at a time
    until it was full, so one call with page_size 1 scanned every version (13 s for 20,000
    on a quiet machine). Here a page looks at 3 versions at most."""
    client.register("m", make_tree(tmp_path / "sft", files=1, size=8), stage="sft")
    for i in range(7):
        client.register("m", make_tree(tmp_path / f"b{i}", files=1, size=8, seed=str(i)))
    monkeypatch.setattr(registry_metadata, "MAX_SCANNED", 3)
    pages = listed_pages(stub_of(registry), stage="sft", page_size=1)
    assert pages == [[], [], [1], []]  # versions 8-6, 5-3, 2 and 1 (a full page), none
    assert [i.version for i in client.list(stage="sft")] == [1]


def test_a_watch_from_an_event_the_registry_never_had_is_refused(
    client: RegistryClient, registry: ServiceThread, tmp_path: Path
) -> None:
    """Regression: XREAD waited in silence for ids from the future, so such a watch never
    delivered anything (the client saw only its deadline)."""
    client.register("m", make_tree(tmp_path / "a", files=1, size=8))
    stub = stub_of(registry)
    for after in (
        "18446744073709551615-0",
        "99999999999999",
        f"{int(time.time() * 1000) + 10**9}-0",
    ):
        call = stub.WatchCheckpoints(
            registry_pb2.WatchCheckpointsRequest(after_event_id=after), timeout=10
        )
        details = refused(next, call)
        assert details.startswith(f"after_event_id {after!r} is after the newest event"), details
    with client.watch(after_event_id="0") as replay:
        assert next(replay).checkpoint.ref == "m:1"


def test_a_redis_that_goes_away_is_unavailable_and_leaves_no_files(tmp_path: Path) -> None:
    """Regression: a watch whose Redis died ended INTERNAL (the client's Watch resumes only
    after UNAVAILABLE); an upload received every file and renamed them into place before
    the commit failed, leaving a directory no version names and no sweep removes."""
    handle = connect_redis(url=None, directory=tmp_path / "redis")
    env = RegistryEnv(handle.url, "astro:reg:", str(tmp_path / "artifacts"), 0)
    service = env.start()
    try:
        client = RegistryClient(service.client_config(retry_attempts=1))
        first = client.register("m", make_tree(tmp_path / "a", files=1, size=8))
        stub = stub_of(service)
        watch = stub.WatchCheckpoints(registry_pb2.WatchCheckpointsRequest(), timeout=60)
        watch.initial_metadata()  # subscribed
        assert handle.server_pid is not None
        os.kill(handle.server_pid, signal.SIGKILL)
        details = refused(next, watch, code=grpc.StatusCode.UNAVAILABLE)
        assert details.startswith("the registry's metadata store is unavailable"), details
        details = refused(
            stub.UploadCheckpoint,
            upload(Header(name="m"), ("a", b"1")),
            code=grpc.StatusCode.UNAVAILABLE,
        )
        assert details.startswith("the registry's metadata store is unavailable"), details
        assert settled_dirs(tmp_path / "artifacts") == [Path(first.artifact_uri)]
    finally:
        service.stop()
        handle.close()


def test_a_watch_poll_longer_than_the_redis_read_timeout_is_refused() -> None:
    """Regression: watch_poll_ms over 5000 made every XREAD outlast the Redis client's read
    timeout, so every watch failed after 5 s."""
    with pytest.raises(ConfigError, match="watch_poll_ms"):
        parse_settings(RegistrySettings, {"watch_poll_ms": 6000})
    assert parse_settings(RegistrySettings, {"watch_poll_ms": 4000}).watch_poll_ms == 4000


@pytest.fixture
def shared(redis_handle: RedisHandle, tmp_path: Path) -> Iterator[tuple[ServiceThread, Path]]:
    """A registry whose artifact root lies inside its import root (one shared volume)."""
    volume = tmp_path / "shared"
    volume.mkdir()
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, str(volume / "checkpoints"), 0, [str(volume)])
    service = env.start()
    yield service, volume
    service.stop()
    for key in redis_handle.client.scan_iter(f"{prefix}*"):
        redis_handle.client.delete(key)


def test_sources_in_the_registry_s_own_storage_are_refused(
    shared: tuple[ServiceThread, Path], tmp_path: Path
) -> None:
    """Regression: with the artifact root inside an import root, a version's own directory
    could be registered again in place, and deleting the version then broke the copy (its
    files were removed); the whole artifact root could be registered, every checkpoint in
    it. Also: a NUL in artifact_uri was answered "embedded null byte"."""
    service, volume = shared
    uploads = RegistryClient(service.client_config())
    owned = uploads.register("m", make_tree(tmp_path / "src"))
    by_path = RegistryClient(service.client_config(retry_attempts=1), shared_storage=True)
    linked = make_tree(volume / "linked", files=1)
    (linked / "weights.bin").symlink_to(Path(owned.artifact_uri) / "file0.bin")
    for source in (owned.artifact_uri, str(volume / "checkpoints"), str(volume), str(linked)):
        for in_place in (True, False):
            with pytest.raises(ValueError, match="overlaps the registry's own artifact root"):
                by_path.register("copy", source, in_place=in_place)
    stub = stub_of(service)
    details = refused(stub.RegisterCheckpoint, Header(name="m", artifact_uri=f"{linked}\x00"))
    assert details.endswith("is not a directory under the registry's import roots"), details
    elsewhere = make_tree(volume / "elsewhere", files=1)
    assert by_path.register("copy", elsewhere, in_place=True).version == 1
    assert [i.ref for i in uploads.list()] == ["copy:1", "m:1"]


def test_an_in_place_hash_stops_when_its_caller_gives_up(
    redis_handle: RedisHandle, tmp_path: Path, slow_reads: list[float]
) -> None:
    """Regression: hashing a source registered in place went on to its end (every file,
    possibly many GB) after the client had gone; the copy already stopped."""
    imports = tmp_path / "imports"
    make_tree(imports / "ckpt", files=20, size=8)
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, str(tmp_path / "artifacts"), 0, [str(imports)])
    service = env.start()
    try:
        request = Header(name="m", artifact_uri=str(imports / "ckpt"), in_place=True)
        gave_up = time.monotonic()
        refused(
            stub_of(service).RegisterCheckpoint,
            request,
            timeout=0.5,
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        time.sleep(3)  # 15 more reads if it went on
        assert [t for t in slow_reads if t > gave_up + 1.0] == []
        assert RegistryClient(service.client_config()).list() == []
    finally:
        service.stop()
        for key in redis_handle.client.scan_iter(f"{prefix}*"):
            redis_handle.client.delete(key)


def test_a_long_copy_does_not_stall_uploads(
    redis_handle: RedisHandle, tmp_path: Path, slow_reads: list[float]
) -> None:
    """Regression: copies and in-place hashes ran on the event loop's shared executor for
    their whole length (hours for a big model), and every upload and download chunk waited
    behind them for a thread."""
    imports = tmp_path / "imports"
    make_tree(imports / "ckpt", files=40, size=8)  # 41 reads of 0.2 s
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, str(tmp_path / "artifacts"), 0, [str(imports)])
    service = env.start()
    try:
        use_one_shared_thread(service)
        copy = stub_of(service).RegisterCheckpoint.future(
            Header(name="big", artifact_uri=str(imports / "ckpt")), timeout=60
        )
        while not slow_reads:
            time.sleep(0.05)  # the copy is under way
        began = time.monotonic()
        small = RegistryClient(service.client_config()).register(
            "small", make_tree(tmp_path / "small", files=1, size=8)
        )
        took = time.monotonic() - began
        copy.cancel()
        assert small.version == 1
        assert took < 3, f"a small upload waited {took:.1f} s for another call's copy"
        deadline = time.monotonic() + 30
        while len(artifact_dirs(tmp_path / "artifacts")) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # the cancelled copy removes what it wrote
        assert artifact_dirs(tmp_path / "artifacts") == [Path(small.artifact_uri)]
    finally:
        service.stop()
        for key in redis_handle.client.scan_iter(f"{prefix}*"):
            redis_handle.client.delete(key)
