"""What the registry refuses: server-side files outside its import roots, and malformed input,
each as INVALID_ARGUMENT (or the status that fits) with a message, never UNKNOWN."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from astro_core.checkpoints.artifacts import hash_tree
from astro_core.config import ConfigError
from services.protos.astro.v1 import registry_pb2, registry_pb2_grpc
from services.registry.client import RegistryClient
from services.registry.server import RegistrySettings, register
from services.runtime.client import sync_channel
from services.runtime.config import parse_settings
from services.runtime.redis_store import RedisHandle
from services.testing import ServiceThread
from tests.registry.conftest import RegistryEnv, artifact_dirs, make_tree

ONE = hashlib.sha256(b"1").hexdigest()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An import root holding a checkpoint, and a secret directory outside it."""
    root = tmp_path / "imports"
    make_tree(root / "ckpt")
    secret = make_tree(tmp_path / "secret", files=1, seed="secret")
    return {"root": root, "ckpt": root / "ckpt", "secret": secret}


@pytest.fixture
def rooted(
    redis_handle: RedisHandle, tmp_path: Path, layout: dict[str, Path]
) -> Iterator[ServiceThread]:
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(
        redis_handle.url, prefix, str(tmp_path / "artifacts"), 0, [str(layout["root"])]
    )
    service = env.start()
    yield service
    service.stop()
    for key in redis_handle.client.scan_iter(f"{prefix}*"):
        redis_handle.client.delete(key)


def _register(service: ServiceThread, uri: str, in_place: bool = False) -> grpc.RpcError | None:
    channel = sync_channel(service.client_config(retry_attempts=1))
    stub = registry_pb2_grpc.CheckpointRegistryStub(channel)
    request = registry_pb2.RegisterCheckpointRequest(name="m", artifact_uri=uri, in_place=in_place)
    try:
        stub.RegisterCheckpoint(request)
        return None
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()


def test_only_sources_under_the_import_roots_are_read(
    rooted: ServiceThread, layout: dict[str, Path], tmp_path: Path
) -> None:
    client = RegistryClient(rooted.client_config(), shared_storage=True)
    info = client.register("m", layout["ckpt"])  # inside: copied
    assert dict(info.sha256) == hash_tree(str(layout["ckpt"]))
    in_place = client.register("m", layout["ckpt"], in_place=True)
    assert in_place.artifact_uri == str(layout["ckpt"].resolve())

    (layout["root"] / "escape").symlink_to(layout["secret"])  # a link out of the root
    (layout["root"] / "dotdot").mkdir()
    outside = [
        str(layout["secret"]),
        f"file://{layout['secret']}",
        str(layout["root"] / "escape"),
        str(layout["root"] / "dotdot" / ".." / ".." / "secret"),
        str(tmp_path / "no-such-dir"),  # missing outside
        str(layout["root"] / "no-such-dir"),  # missing inside: the same answer
        "/etc",
    ]
    answers = set()
    for uri in outside:
        for in_place_flag in (False, True):
            err = _register(rooted, uri, in_place_flag)
            assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, uri
            answers.add(err.details().replace(repr(uri), "URI"))
    assert answers == {"artifact_uri URI is not a directory under the registry's import roots"}

    # A file inside that links outside is refused too.
    (layout["ckpt"] / "stolen.bin").symlink_to(layout["secret"] / "nested" / "part.bin")
    err = _register(rooted, str(layout["ckpt"]))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stolen.bin leads outside" in err.details()
    assert [i.version for i in client.list("m")] == [2, 1]


def test_an_in_place_file_turned_into_a_link_out_is_not_served(
    rooted: ServiceThread, layout: dict[str, Path], tmp_path: Path
) -> None:
    client = RegistryClient(rooted.client_config(), shared_storage=True)
    client.register("m", layout["ckpt"], in_place=True)
    target = layout["ckpt"] / "file0.bin"
    target.unlink()
    target.symlink_to(layout["secret"] / "nested" / "part.bin")
    channel = sync_channel(rooted.client_config())
    stub = registry_pb2_grpc.CheckpointRegistryStub(channel)
    stream = stub.DownloadCheckpoint(registry_pb2.GetCheckpointRequest(name="m"))
    data = b""
    with pytest.raises(grpc.RpcError) as err:
        for message in stream:
            data += message.chunk.data
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "file0.bin" in err.value.details()
    assert (layout["secret"] / "nested" / "part.bin").read_bytes() not in data
    channel.close()


def test_without_import_roots_the_registry_takes_uploads_only(
    registry: ServiceThread, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src")
    for uri in (str(source), f"file://{source}", "s3://bucket/ckpt", "http://host/ckpt"):
        for in_place in (False, True):
            err = _register(registry, uri, in_place)
            assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, uri
            assert "uploads only" in err.details()
    assert RegistryClient(registry.client_config()).register("m", source).version == 1


def test_an_unknown_or_missing_filesystem_is_refused_at_start() -> None:
    # an unknown protocol is a bad setting wherever the config is read
    with pytest.raises(ConfigError, match="no filesystem is known for nope://"):
        parse_settings(RegistrySettings, {"artifact_root": "nope://x"})
    with pytest.raises(ConfigError, match="import root"):
        parse_settings(RegistrySettings, {"import_roots": [""]})
    # a known one whose backend is not installed parses (the chart renders such configs for an
    # image that has it), and the registry refuses to start without it
    s3_installed = importlib.util.find_spec("s3fs") is not None
    for setting, key in (
        ({"import_roots": ["s3://bucket/ckpt"]}, "settings.import_roots[0]"),
        ({"artifact_root": "s3://bucket/ckpt"}, "settings.artifact_root"),
    ):
        settings = parse_settings(RegistrySettings, setting)
        if s3_installed:
            settings.check_backends()
        else:
            with pytest.raises(ConfigError, match=re.escape(key) + ".*no filesystem for s3://"):
                settings.check_backends()


def test_malformed_input_is_invalid_argument_not_unknown(
    registry: ServiceThread, tmp_path: Path
) -> None:
    RegistryClient(registry.client_config()).register("tiny", make_tree(tmp_path / "a"))
    channel = sync_channel(registry.client_config(retry_attempts=1))
    stub = registry_pb2_grpc.CheckpointRegistryStub(channel)
    header = registry_pb2.RegisterCheckpointRequest
    cases = [
        (stub.ListCheckpoints, registry_pb2.ListCheckpointsRequest(page_token="１"), "page_token"),
        (stub.ListCheckpoints, registry_pb2.ListCheckpointsRequest(page_token="²"), "page_token"),
        (
            stub.ListCheckpoints,
            registry_pb2.ListCheckpointsRequest(page_token="9" * 40),
            "page_token",
        ),
        (stub.RegisterCheckpoint, header(name="t", artifact_uri="s3://b/x"), "uploads only"),
        (
            stub.RegisterCheckpoint,
            header(name="t", artifact_uri=str(tmp_path), aliases=["latest"]),
            "latest",
        ),
        (
            stub.RegisterCheckpoint,
            header(name="t", artifact_uri=str(tmp_path), metrics={"loss": math.nan}),
            "finite",
        ),
        (
            stub.RegisterCheckpoint,
            header(name="t", artifact_uri=str(tmp_path), sha256={"a.bin": "xyz"}),
            "64 lowercase hex",
        ),
        (
            stub.RegisterCheckpoint,
            header(name="t", artifact_uri=str(tmp_path), sha256={"../a": "0" * 64}),
            "invalid",
        ),
    ]
    for method, request, words in cases:
        with pytest.raises(grpc.RpcError) as caught:
            method(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert words in caught.value.details(), caught.value.details()
    for event_id in ("99999999999999999999999-0", "1-99999999999999999999999", "１-0", "1-", "-1"):
        stream = stub.WatchCheckpoints(
            registry_pb2.WatchCheckpointsRequest(after_event_id=event_id), timeout=10
        )
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, event_id
        assert "after_event_id" in caught.value.details()
    chunk = registry_pb2.FileChunk
    uploads = [  # the files an upload sends, and what the refusal says
        ([chunk(path="a", data=b"1", sha256="not-hex")], "64 lowercase hex"),
        ([chunk(path="a" * 300, data=b"1")], "at most"),
        ([chunk(path="/".join(["d"] * 2000), data=b"1")], "at most"),  # was RecursionError
        ([chunk(path="a\x00b", data=b"1")], "control character"),
        ([chunk(path="a", data=b"1", sha256=ONE), chunk(path="a/b", data=b"1")], "inside the file"),
        ([chunk(path="a/b", data=b"1", sha256=ONE), chunk(path="a", data=b"1")], "also the dir"),
        ([], "at least one file"),
    ]
    for chunks, words in uploads:
        messages = [registry_pb2.UploadCheckpointRequest(header=header(name="t"))]
        messages += [registry_pb2.UploadCheckpointRequest(chunk=c) for c in chunks]
        with pytest.raises(grpc.RpcError) as caught:
            stub.UploadCheckpoint(iter(messages))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, chunks
        assert words in caught.value.details(), caught.value.details()
    # The smallest valid ones are accepted (a token names its listing's name and stage).
    assert (
        stub.ListCheckpoints(registry_pb2.ListCheckpointsRequest(page_token="::0")).checkpoints
        == []
    )
    channel.close()
    client = RegistryClient(registry.client_config())
    with pytest.raises(ValueError, match="latest"):
        client.register("tiny", make_tree(tmp_path / "b"), aliases=["sft", "latest"])
    assert [i.version for i in client.list("tiny")] == [1]  # nothing stored by the refusals


def test_an_upload_larger_than_the_limit_is_refused(
    redis_handle: RedisHandle, tmp_path: Path
) -> None:
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, str(tmp_path / "artifacts"), 0)
    config = env.config()
    config.settings["max_upload_bytes"] = 4096
    with ServiceThread("registry", register, config) as service:
        client = RegistryClient(service.client_config(), chunk_bytes=1024)
        with pytest.raises(grpc.RpcError) as caught:
            client.register("big", make_tree(tmp_path / "big", files=2, size=4096))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_upload_bytes" in caught.value.details()
        assert (
            client.register("small", make_tree(tmp_path / "small", files=1, size=100)).version == 1
        )
        assert [d.parent.name for d in artifact_dirs(tmp_path / "artifacts")] == ["small"]
    for key in redis_handle.client.scan_iter(f"{prefix}*"):
        redis_handle.client.delete(key)


def test_an_upload_whose_files_cannot_be_read_says_so(
    client: RegistryClient, tmp_path: Path
) -> None:
    """Not gRPC's "Exception iterating requests!": the client's own error, and nothing stored."""
    from astro_core.checkpoints import CheckpointError

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no files"):
        client.register("m", tmp_path / "empty")
    with pytest.raises(CheckpointError, match="is not a directory"):
        client.register("m", tmp_path / "missing")

    class VanishingClient(RegistryClient):
        def _upload_messages(self, header, source):  # type: ignore[no-untyped-def]
            messages = super()._upload_messages(header, source)
            yield next(messages)  # the header
            yield next(messages)  # config.json: the files were listed
            (Path(source) / "file1.bin").unlink()  # gone before it is read
            yield from messages

    vanishing = VanishingClient(client.config)
    with pytest.raises(FileNotFoundError):
        vanishing.register("m", make_tree(tmp_path / "src"))
    assert client.list() == []


def test_a_copy_whose_caller_gave_up_stops_and_leaves_nothing(
    redis_handle: RedisHandle, layout: dict[str, Path], tmp_path: Path
) -> None:
    big = make_tree(layout["root"] / "big", files=24, size=2 << 20)  # ~48 MB to copy
    # 64-byte chunks: ~790,000 chunk steps (seconds), far more than the 0.2 s deadline allows
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(
        redis_handle.url, prefix, str(tmp_path / "artifacts"), 0, [str(layout["root"])], 64
    )
    rooted = env.start()
    channel = sync_channel(rooted.client_config(retry_attempts=1))
    stub = registry_pb2_grpc.CheckpointRegistryStub(channel)
    request = registry_pb2.RegisterCheckpointRequest(name="m", artifact_uri=str(big))
    with pytest.raises(grpc.RpcError) as caught:
        stub.RegisterCheckpoint(request, timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    channel.close()
    root = tmp_path / "artifacts"
    deadline = time.monotonic() + 30
    while artifact_dirs(root) and time.monotonic() < deadline:
        time.sleep(0.1)  # the copy notices at its next chunk and removes what it wrote
    time.sleep(2)  # and nothing appears later either
    assert artifact_dirs(root) == []
    assert RegistryClient(rooted.client_config()).list() == []
    rooted.stop()
