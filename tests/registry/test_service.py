"""The registry service over real Redis (embedded and REDIS_URL) and real gRPC on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from astro_core.checkpoints import (
    CheckpointInUse,
    CheckpointNotFound,
    CheckpointStore,
    IntegrityError,
)
from astro_core.checkpoints.artifacts import hash_tree
from services.protos.astro.v1 import registry_pb2, registry_pb2_grpc
from services.registry.client import RegistryClient
from services.runtime.client import sync_channel
from services.runtime.redis_store import RedisHandle
from services.testing import ServiceThread
from tests.conftest import REPO
from tests.registry.conftest import RegistryEnv, artifact_dirs, make_tree, take


def test_concurrent_registrations_get_distinct_consecutive_versions(
    client: RegistryClient, tmp_path: Path
) -> None:
    sources = [make_tree(tmp_path / f"src{i}", files=2, size=1024, seed=str(i)) for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        infos = list(pool.map(lambda s: client.register("tiny", s, stage="sft"), sources))
    assert sorted(i.version for i in infos) == list(range(1, 21))
    # Each version holds the files of the registration that got it.
    for source, info in zip(sources, infos, strict=True):
        assert dict(info.sha256) == hash_tree(str(source))
        assert hash_tree(info.artifact_uri) == dict(info.sha256)
    assert client.get("tiny").version == 20
    assert [i.version for i in client.list("tiny")] == list(range(20, 0, -1))


def test_round_trip_aliases_listing_and_paging(
    client: RegistryClient, registry: ServiceThread, tmp_path: Path
) -> None:
    assert isinstance(client, CheckpointStore)
    base = client.register("tiny", make_tree(tmp_path / "a"), aliases=["sft"])
    grpo = client.register(
        "tiny",
        make_tree(tmp_path / "b"),
        stage="grpo",
        parent_version=1,
        step=40,
        metrics={"reward": 0.5},
        aliases=["best"],
    )
    other = client.register("other", make_tree(tmp_path / "c"))
    assert (base.version, grpo.version, other.version) == (1, 2, 1)
    assert grpo.aliases == ("best", "latest") and grpo.metrics == {"reward": 0.5}
    assert (grpo.parent_version, grpo.step, grpo.stage) == (1, 40, "grpo")
    assert client.get("tiny", alias="sft").aliases == ("sft",)
    assert [i.ref for i in client.list()] == ["other:1", "tiny:2", "tiny:1"]
    assert [i.ref for i in client.list(stage="grpo")] == ["tiny:2"]
    moved = client.set_alias("tiny", 2, "sft")
    assert moved.aliases == ("best", "latest", "sft")
    assert client.get("tiny", 1).aliases == ()
    # Paging: newest first, two at a time, tokens from the previous page.
    stub = registry_pb2_grpc.CheckpointRegistryStub(sync_channel(registry.client_config()))
    refs, token = [], ""
    while True:
        page = stub.ListCheckpoints(
            registry_pb2.ListCheckpointsRequest(page_size=2, page_token=token)
        )
        refs += [f"{c.name}:{c.version}" for c in page.checkpoints]
        token = page.next_page_token
        if not token:
            break
    assert refs == ["other:1", "tiny:2", "tiny:1"]
    resolved = stub.ResolveAlias(registry_pb2.GetCheckpointRequest(name="tiny", alias="best"))
    assert resolved.version == 2


def test_tampered_file_fails_verification_on_pull(client: RegistryClient, tmp_path: Path) -> None:
    info = client.register("tiny", make_tree(tmp_path / "src"))
    good = client.pull("tiny", tmp_path / "good")
    assert hash_tree(str(good)) == dict(info.sha256)
    (Path(info.artifact_uri) / "nested" / "part.bin").write_bytes(b"flipped bits")
    with pytest.raises(IntegrityError, match=r"tiny:1: sha256 mismatch for nested/part\.bin"):
        client.pull("tiny", tmp_path / "bad", version=1)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    (Path(info.artifact_uri) / "config.json").unlink()
    with pytest.raises(IntegrityError, match="config.json"):
        client.pull("tiny", tmp_path / "bad")


def test_delete_is_refused_while_an_alias_points_at_it(
    client: RegistryClient, tmp_path: Path
) -> None:
    first = client.register("tiny", make_tree(tmp_path / "a"), aliases=["sft"])
    client.register("tiny", make_tree(tmp_path / "b"))
    with pytest.raises(CheckpointInUse, match="tiny:1 is in use by alias.*sft"):
        client.delete("tiny", 1)
    with pytest.raises(CheckpointInUse, match="latest"):
        client.delete("tiny", 2)
    assert Path(first.artifact_uri).is_dir()
    client.set_alias("tiny", 2, "sft")
    client.delete("tiny", 1)
    assert not Path(first.artifact_uri).exists()
    assert [i.version for i in client.list("tiny")] == [2]
    with pytest.raises(CheckpointNotFound, match="tiny has no version 1"):
        client.get("tiny", 1)
    assert client.register("tiny", make_tree(tmp_path / "c")).version == 3


def test_bad_input_gets_invalid_argument_or_not_found(
    registry: ServiceThread, client: RegistryClient, tmp_path: Path
) -> None:
    client.register("tiny", make_tree(tmp_path / "a"))
    stub = registry_pb2_grpc.CheckpointRegistryStub(sync_channel(registry.client_config()))
    cases = [
        (stub.GetCheckpoint, registry_pb2.GetCheckpointRequest(name=""), "INVALID", "model name"),
        (stub.GetCheckpoint, registry_pb2.GetCheckpointRequest(name="nope"), "NOT_FOUND", "nope"),
        (
            stub.GetCheckpoint,
            registry_pb2.GetCheckpointRequest(name="tiny", alias="best"),
            "NOT_FOUND",
            "no alias 'best'",
        ),
        (
            stub.RegisterCheckpoint,
            registry_pb2.RegisterCheckpointRequest(name="tiny", artifact_uri=str(tmp_path / "x")),
            "INVALID",
            "uploads only",
        ),
        (
            stub.RegisterCheckpoint,
            registry_pb2.RegisterCheckpointRequest(
                name="tiny", artifact_uri=str(tmp_path / "a"), stage="rl"
            ),
            "INVALID",
            "stage 'rl'",
        ),
        (
            stub.SetAlias,
            registry_pb2.SetAliasRequest(name="tiny", version=1, alias="latest"),
            "INVALID",
            "latest",
        ),
        (
            stub.SetAlias,
            registry_pb2.SetAliasRequest(name="tiny", version=9, alias="best"),
            "NOT_FOUND",
            "no version 9",
        ),
        (
            stub.ListCheckpoints,
            registry_pb2.ListCheckpointsRequest(page_token="garbage"),
            "INVALID",
            "page_token",
        ),
        (
            stub.DeleteCheckpoint,
            registry_pb2.GetCheckpointRequest(name="tiny", alias="latest"),
            "INVALID",
            "version number",
        ),
    ]
    for method, request, code, words in cases:
        with pytest.raises(grpc.RpcError) as caught:
            method(request)
        assert caught.value.code().name.startswith(code), (request, caught.value.details())
        assert words in caught.value.details()
    # An upload must start with its header, and each file must carry its sha256.
    bad_upload = [
        registry_pb2.UploadCheckpointRequest(
            header=registry_pb2.RegisterCheckpointRequest(name="t")
        ),
        registry_pb2.UploadCheckpointRequest(chunk=registry_pb2.FileChunk(path="../x", data=b"1")),
    ]
    with pytest.raises(grpc.RpcError, match="invalid") as caught:
        stub.UploadCheckpoint(iter(bad_upload))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    corrupt = [
        registry_pb2.UploadCheckpointRequest(
            header=registry_pb2.RegisterCheckpointRequest(name="t")
        ),
        registry_pb2.UploadCheckpointRequest(
            chunk=registry_pb2.FileChunk(path="w.bin", data=b"abc", sha256="0" * 64)
        ),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadCheckpoint(iter(corrupt))
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "w.bin" in caught.value.details()
    with pytest.raises(CheckpointNotFound):
        client.get("t")


def test_watch_delivers_every_registration_in_order_to_two_subscribers(
    client: RegistryClient, tmp_path: Path
) -> None:
    sources = [make_tree(tmp_path / f"s{i}", files=1, size=512, seed=str(i)) for i in range(8)]
    with client.watch() as first, client.watch("tiny") as second:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda s: client.register("tiny", s), sources))
        client.register("other", sources[0])  # filtered out of `second`
        client.set_alias("tiny", 3, "best")
        seen_first = take(first, 9)
        seen_second = take(second, 1, kind="alias")
    assert [e.checkpoint.ref for e in seen_first] == [f"tiny:{v}" for v in range(1, 9)] + [
        "other:1"
    ]
    assert all(e.checkpoint.sha256 for e in seen_first)
    ids = [e.event_id for e in seen_first]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # The filtered subscriber sees the same registrations, in the same order.
    with client.watch("tiny", after_event_id="0") as replay:
        replayed = take(replay, 8)
    assert [e.event_id for e in replayed] == ids[:8]
    assert seen_second[0].alias == "latest" and seen_second[0].checkpoint.version == 1


def test_restart_keeps_metadata_aliases_and_events(
    registry_env: RegistryEnv, tmp_path: Path
) -> None:
    service = registry_env.start()
    try:
        client = RegistryClient(service.client_config())
        client.register("tiny", make_tree(tmp_path / "a"), stage="sft", aliases=["sft"])
        client.register("tiny", make_tree(tmp_path / "b"), stage="grpo", metrics={"r": 1.0})
        client.set_alias("tiny", 2, "best")
        client.set_alias("tiny", 1, "mine")
        before = client.list()
        watch = client.watch("tiny")
    finally:
        service.stop()
    service = registry_env.start()  # same Redis, keys, artifact root and port
    try:
        assert client.list() == before
        assert client.get("tiny", alias="sft").version == 1
        assert client.get("tiny", alias="best").version == 2
        assert client.get("tiny", alias="mine").version == 1
        assert client.get("tiny").version == 2
        pulled = client.pull("tiny", tmp_path / "pulled", alias="best")
        assert hash_tree(str(pulled)) == dict(before[0].sha256)
        # The open watch reconnects and gets what was registered after the restart.
        third = client.register("tiny", make_tree(tmp_path / "c"))
        got = take(watch, 1)
        assert [e.checkpoint.version for e in got] == [third.version] == [3]
        watch.close()
        # Every event is still in the log, in order.
        with client.watch("tiny", after_event_id="0") as replay:
            assert [e.checkpoint.version for e in take(replay, 3)] == [1, 2, 3]
    finally:
        service.stop()


def test_embedded_redis_restart_keeps_the_registry(tmp_path: Path) -> None:
    """The whole local platform restarting: service and embedded Redis both."""
    from services.runtime.redis_store import connect_redis

    for round_ in range(2):
        with connect_redis(directory=tmp_path / "redis") as handle:
            env = RegistryEnv(handle.url, "astro:reg:", str(tmp_path / "artifacts"), 0)
            service = env.start()
            try:
                client = RegistryClient(service.client_config())
                if round_ == 0:
                    client.register("tiny", make_tree(tmp_path / "a"), aliases=["sft"])
                else:
                    assert client.get("tiny", alias="sft").version == 1
                    with client.watch(after_event_id="0") as replay:
                        assert [e.kind for e in take(replay, 1)] == ["registered"]
            finally:
                service.stop()


UPLOADER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from services.registry.client import RegistryClient

    address, source, marker = sys.argv[1:4]

    class HangingClient(RegistryClient):
        def _upload_messages(self, header, source):
            for i, message in enumerate(super()._upload_messages(header, source)):
                yield message
                if i == 2:  # header + two chunks sent
                    Path(marker).touch()
                    time.sleep(600)

    HangingClient(address, chunk_bytes=1024).register("tiny", source, aliases=["sft"])
    """
)


def test_killed_uploader_leaves_no_registered_checkpoint(
    registry_env: RegistryEnv, client: RegistryClient, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src", files=2, size=8192)
    root, marker = Path(registry_env.artifact_root), tmp_path / "marker"
    writer = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, client.config.address, str(source), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        # Killed only once the server is writing the upload to its temporary directory.
        while not (
            marker.exists() and any((d / "file0.bin").exists() for d in artifact_dirs(root))
        ):
            assert writer.poll() is None, "the uploader exited before it was killed"
            assert time.monotonic() < deadline, "the upload never reached the server"
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
    deadline = time.monotonic() + 30
    while artifact_dirs(root) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the dead client and removes its files
    assert artifact_dirs(root) == []
    assert client.list() == []
    with pytest.raises(CheckpointNotFound):
        client.get("tiny", alias="sft")
    assert client.register("tiny", source).version == 1


def test_restart_sweeps_old_leftovers_of_dead_writers(
    registry_env: RegistryEnv, tmp_path: Path
) -> None:
    """A registry killed mid-write leaves `.tmp-` directories; the next start removes the old
    ones and keeps young ones (an upload of another replica may still be running)."""
    root = Path(registry_env.artifact_root)
    old = make_tree(root / "tiny" / ".tmp-20260101T000000Z-dead-0001")
    young = make_tree(root / "tiny" / ".tmp-20260101T000000Z-busy-0002")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    service = registry_env.start()
    try:
        with RegistryClient(service.client_config()) as client:
            info = client.register("tiny", make_tree(tmp_path / "a"))
            kept = sorted(p.name for p in (root / "tiny").iterdir())
            assert not old.exists() and young.exists()
            assert len(kept) == 2 and young.name in kept  # the young leftover and version 1
            assert client.pull("tiny", tmp_path / "pulled").is_dir() and info.version == 1
    finally:
        service.stop()


def test_fsspec_artifact_root_and_shared_storage(redis_handle: RedisHandle, tmp_path: Path) -> None:
    """Artifacts under a memory:// root; a source registered by URL instead of uploaded."""
    bucket = f"memory://astro-reg-{uuid.uuid4().hex}"
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, f"{bucket}/artifacts", 0, [str(tmp_path)])
    service = env.start()
    try:
        source = make_tree(tmp_path / "src")
        shared = RegistryClient(service.client_config(), shared_storage=True)
        info = shared.register("tiny", source)
        assert info.artifact_uri.startswith(f"{bucket}/artifacts/tiny/")
        assert hash_tree(info.artifact_uri) == hash_tree(str(source))
        uploaded = RegistryClient(service.client_config()).register("tiny", source)
        assert uploaded.version == 2 and dict(uploaded.sha256) == dict(info.sha256)
        pulled = shared.pull("tiny", tmp_path / "pulled", version=1)
        assert hash_tree(str(pulled)) == dict(info.sha256)
        in_place = shared.register("tiny", source, in_place=True)
        assert Path(in_place.artifact_uri) == source.resolve()
    finally:
        service.stop()
        for key in redis_handle.client.scan_iter(f"{prefix}*"):
            redis_handle.client.delete(key)


def test_registers_the_tiny_model(
    client: RegistryClient, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from astro_core.models.tiny import load_model

    info = client.register("tiny-llama", tiny_model_dir, aliases=["sft"])
    assert "config.json" in info.sha256
    pulled = client.pull("tiny-llama", tmp_path / "model", alias="sft")
    model, tokenizer = load_model(pulled)
    assert model.config.vocab_size > 0 and tokenizer("2+2").input_ids
