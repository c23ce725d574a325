"""The Runs service against a hostile or careless client: every bad request is refused with
a status naming the field (never INTERNAL), a slow request does not stall the others, and
nothing another run stored is touched."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.coordinator.runs import service as runs_service
from services.coordinator.runs.store import RunStore
from services.protos.astro.v1 import run_pb2
from services.runtime.redis_store import RedisHandle, connect_redis
from tests.rpc import refused
from tests.runs.conftest import Coordinator
from tests.runs.test_start_errors import message


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def redis_handle(tmp_path: Path) -> Iterator[RedisHandle]:
    """The coordinator's Redis, which a test may stop (conftest's redis_url, held here)."""
    handle = connect_redis(None, tmp_path / "redis")
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def redis_url(redis_handle: RedisHandle) -> str:
    return redis_handle.url


@pytest.fixture
def api_only(start_coordinator: Callable[..., Coordinator]) -> Coordinator:
    """A coordinator that serves Runs but drives none: its runs stay pending."""
    return start_coordinator(worker=False)


def test_deeply_nested_config_yaml_is_refused_naming_the_field(
    api_only: Coordinator, model_dir: Path
) -> None:
    stub = api_only.client._stub
    nested = {
        "flow lists": "search: " + "[" * 5000 + "]" * 5000,
        "flow mappings": "search: " + "{a: " * 3000 + "1" + "}" * 3000,
        "block mappings": "search:\n" + "".join(" " * i + "a:\n" for i in range(1, 600)),
        "deep but parseable": "clone: " + "[" * 40 + "]" * 40,
    }
    for label, text in nested.items():
        request = run_pb2.StartRunRequest(spec=message(model_dir, config_yaml=text))
        details = refused(stub.StartRun, request, timeout=60)
        assert details.startswith("config_yaml: nests lists or mappings more than"), (
            label,
            details,
        )
    assert not api_only.client.list().runs, "a refused run was recorded"


def test_a_name_with_control_characters_is_refused(api_only: Coordinator, model_dir: Path) -> None:
    for name in ("\x1b]0;owned\x07", "a\0b", "line\nbreak"):
        details = refused(api_only.client.start, message(model_dir, name=name))
        assert details.startswith("name:"), details
    assert api_only.client.start(message(model_dir, name="ünïcode run – 1")).run_id


def _latency_while(busy: Callable[[], Any], probe: Callable[[], Any]) -> float:
    """Seconds `probe` takes while `busy` runs in another thread."""
    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    time.sleep(0.3)  # busy is in its slow part now
    began = time.monotonic()
    probe()
    took = time.monotonic() - began
    worker.join(timeout=30)
    return took


def _unknown_run(coordinator: Coordinator) -> None:
    refused(coordinator.client.get, "0123456789abcdef", code=grpc.StatusCode.NOT_FOUND)


def test_parsing_a_big_spec_does_not_stall_other_calls(
    api_only: Coordinator, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = runs_service.spec_from_proto

    def slow_parse(spec: run_pb2.RunSpec) -> Any:  # as 256 KiB of YAML on a slow machine
        time.sleep(3.0)
        return parse(spec)

    monkeypatch.setattr(runs_service, "spec_from_proto", slow_parse)
    started: list[str] = []
    took = _latency_while(
        lambda: started.append(api_only.client.start(message(model_dir)).run_id),
        lambda: _unknown_run(api_only),
    )
    assert started, "the slow StartRun failed"
    assert took < 1.5, f"GetRun waited {took:.1f} s for another call's spec parsing"


def test_listing_runs_does_not_stall_other_calls(
    api_only: Coordinator, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = api_only.client.start(message(model_dir)).run_id
    build = runs_service.status_to_proto

    def slow_build(record: Any) -> Any:  # as a page of 100 runs with big configs
        time.sleep(3.0)
        return build(record)

    monkeypatch.setattr(runs_service, "status_to_proto", slow_build)
    listed: list[str] = []
    took = _latency_while(
        lambda: listed.extend(r.run_id for r in api_only.client.list().runs),
        lambda: _unknown_run(api_only),
    )
    assert listed == [rid]
    assert took < 1.5, f"GetRun waited {took:.1f} s for ListRuns to build its page"


def test_watch_from_an_event_the_run_never_had_is_refused(
    api_only: Coordinator, model_dir: Path
) -> None:
    client = api_only.client
    mine = client.start(message(model_dir)).run_id
    other = client.start(message(model_dir)).run_id
    client.cancel(mine)  # mine has ended: "run created", "cancelled"
    mine_events = list(client.watch(mine))
    assert [e.state for e in mine_events] == ["pending", "cancelled"]
    other_event = next(iter(client._stub.WatchRun(run_pb2.WatchRunRequest(run_id=other))))

    def watch(after: str) -> list[Any]:
        request = run_pb2.WatchRunRequest(run_id=mine, after_event_id=after)
        return list(client._stub.WatchRun(request, timeout=10))

    last = mine_events[-1].event_id
    for after in (
        other_event.event_id,  # another run's (newer than every event of mine)
        "99999999999999-0",  # from the future
        last.split("-")[0] + "-7",  # between two of mine
        "1-0",  # before the run existed
        "99999999999999999999-0",  # past what a Redis stream id holds
        "\u0661-0",  # a digit, but not one Redis reads
        "18446744073709551616-0",
        mine_events[0].event_id + "\n",
    ):
        details = refused(watch, after)
        assert details.startswith("after_event_id:"), (after, details)
    # what a client really saw still resumes, and "0-0" is the start
    assert [e.event_id for e in watch(mine_events[0].event_id)] == [last]
    assert watch(last) == []
    assert [e.event_id for e in watch("0-0")] == [e.event_id for e in mine_events]


def test_a_run_id_with_a_trailing_newline_is_malformed(
    api_only: Coordinator, model_dir: Path
) -> None:
    rid = api_only.client.start(message(model_dir)).run_id
    for call in (api_only.client.get, api_only.client.cancel):
        details = refused(call, rid + "\n")
        assert details.startswith("run_id:"), details
    assert api_only.client.get(rid).state == "pending", "a refused cancel changed the run"


def _token(created: str, rid: str) -> str:
    raw = ('{"c": ' + created + ', "r": "' + rid + '"}').encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_tokens_with_times_that_are_not_numbers_are_refused(
    api_only: Coordinator, model_dir: Path
) -> None:
    rid = api_only.client.start(message(model_dir)).run_id
    for created in ("NaN", "Infinity", "-Infinity", "1" + "0" * 120):
        token = _token(created, rid)
        assert json.loads(base64.urlsafe_b64decode(token + "==="))["r"] == rid
        details = refused(api_only.client.list, page_token=token)
        assert details.startswith("page_token:"), (created, details)


def test_an_output_folder_inside_another_run_s_folder_is_refused(
    api_only: Coordinator, model_dir: Path
) -> None:
    client = api_only.client
    first = client.start(message(model_dir, output_uri="team/first"))
    default = client.start(message(model_dir))
    kept = {run.output_dir: files_under(Path(run.output_dir)) for run in (first, default)}
    for inside in (
        "team/first/search",  # where the first run's search stage will write
        "team/first/later/deeper",
        f"file://{first.output_dir}/clone",
        f"{default.output_dir}/clone",
        f"{default.run_id}/sft",
    ):
        details = refused(client.start, message(model_dir, output_uri=inside))
        assert details.startswith("output_uri:") and "inside the folder of run" in details, details
    assert {run.run_id for run in client.list().runs} == {first.run_id, default.run_id}
    for folder, files in kept.items():
        assert files_under(Path(folder)) == files, f"a refused run changed {folder}"
        assert not any(p.is_dir() for p in Path(folder).iterdir() if p.name != "inputs")
    # a sibling of a run's folder is fine
    assert client.start(message(model_dir, output_uri="team/second")).output_dir.endswith("second")


def test_a_retry_racing_the_first_start_gets_the_same_run(
    api_only: Coordinator, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client whose StartRun timed out retries with the same request id while the first
    call is still validating: both answers are the one run, even with an output_uri (which
    only one run may claim)."""
    validate = runs_service.validate_spec

    def slow_validate(*args: Any) -> Any:  # as reading a big dataset
        time.sleep(1.0)
        return validate(*args)

    monkeypatch.setattr(runs_service, "validate_spec", slow_validate)
    spec = message(model_dir, output_uri="retried")
    answers: list[Any] = []

    def start() -> None:
        try:
            answers.append(api_only.client.start(spec, client_request_id="retry-1").run_id)
        except grpc.RpcError as exc:
            answers.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 3 and len(set(answers)) == 1, answers
    assert [r.run_id for r in api_only.client.list().runs] == answers[:1]


def test_a_watch_the_client_cancels_is_released(api_only: Coordinator, model_dir: Path) -> None:
    """A pending run is watched for ever; when the client goes away mid-stream, the server
    stops reading the run's log for it."""
    import redis

    rid = api_only.client.start(message(model_dir)).run_id
    calls = api_only.client._stub.WatchRun(run_pb2.WatchRunRequest(run_id=rid), timeout=60)
    assert next(calls).state == "pending"
    reader = redis.Redis.from_url(api_only.redis_url, decode_responses=True)

    def xreads() -> int:
        stats: Any = reader.info("commandstats")
        return int(stats.get("cmdstat_xread", {}).get("calls", 0))

    before = xreads()
    time.sleep(1.0)
    assert xreads() > before, "the watch does not poll the run's log (nothing to release)"
    calls.cancel()
    time.sleep(1.0)  # a poll in flight ends
    released = xreads()
    time.sleep(1.5)
    assert xreads() == released, "the server goes on polling for a watch nobody reads"
    reader.close()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def test_a_start_with_fields_this_coordinator_does_not_know_is_refused(
    api_only: Coordinator, model_dir: Path
) -> None:
    """A newer client's field (a dry-run flag, a spec option) is not silently dropped: the
    run would not be what was asked for."""
    channel = grpc.insecure_channel(api_only.address)
    call = channel.unary_unary(
        "/astro.v1.Runs/StartRun",
        request_serializer=lambda raw: raw,
        response_deserializer=run_pb2.RunStatus.FromString,
    )
    spec = message(model_dir)
    model = spec.base_model.SerializeToString()
    spec.ClearField("base_model")
    plain = spec.SerializeToString()
    cases = {
        "request: unknown field number 15": _message_field(1, plain) + _varint_field(15, 1),
        "spec: unknown field number 15": _message_field(1, plain + _varint_field(15, 1)),
        "spec.base_model: unknown field number 12": _message_field(
            1, plain + _message_field(6, model + _varint_field(12, 1))
        ),
    }
    try:
        for expected, raw in cases.items():
            details = refused(call, raw, timeout=30)
            assert details.startswith(expected), details
        assert not api_only.client.list().runs, "a refused run was recorded"
        # the same bytes without the unknown field start a run
        status = call(_message_field(1, plain + _message_field(6, model)), timeout=30)
        assert status.spec.base_model.path == str(model_dir)
    finally:
        channel.close()


def test_a_lost_redis_is_unavailable_not_internal(
    api_only: Coordinator, model_dir: Path, redis_handle: RedisHandle, tmp_path: Path
) -> None:
    """Regression: with Redis gone every Runs call failed INTERNAL (an open watch too), with
    a traceback in the log; UNAVAILABLE is what a client retries, and a watch resumes."""
    if not redis_handle.embedded:
        pytest.skip("an external Redis (REDIS_URL) is not this test's to stop")
    stub = api_only.client._stub
    rid = api_only.client.start(message(model_dir)).run_id
    watch = stub.WatchRun(run_pb2.WatchRunRequest(run_id=rid), timeout=60)
    first = next(watch)
    redis_handle.close()
    unavailable = "the coordinator's run store is unavailable: "
    details = refused(list, watch, code=grpc.StatusCode.UNAVAILABLE)
    assert details.startswith(unavailable), details

    def watch_all(request: run_pb2.WatchRunRequest, **kwargs: Any) -> list[Any]:
        return list(stub.WatchRun(request, **kwargs))

    get = run_pb2.GetRunRequest(run_id=rid)
    calls: list[tuple[Callable[..., Any], Any]] = [
        (stub.StartRun, run_pb2.StartRunRequest(spec=message(model_dir, name="another"))),
        (stub.GetRun, get),
        (stub.ListRuns, run_pb2.ListRunsRequest()),
        (watch_all, run_pb2.WatchRunRequest(run_id=rid)),
        (watch_all, run_pb2.WatchRunRequest(run_id=rid, after_event_id=first.event_id)),
        (stub.CancelRun, get),
    ]
    for call, request in calls:
        details = refused(call, request, code=grpc.StatusCode.UNAVAILABLE, timeout=30)
        assert details.startswith(unavailable), (call, details)
        assert "Traceback" not in details, details
    # Nothing stored was lost (or half-written by the refused start and cancel).
    with connect_redis(None, tmp_path / "redis") as again:
        store = RunStore(again.client)
        assert [found for found, _ in store.page(10, None)] == [rid]
        assert store.state(rid) == "pending"
