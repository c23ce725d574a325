"""The Runs service's API: idempotent start, paged listing, resumable watching, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
import redis

from astro_core.pipeline.spec import RunSpec
from services.coordinator.jobs import JobStore
from services.coordinator.runs.service import decode_token, encode_token
from services.coordinator.runs.store import RunStore
from tests.runs.conftest import Coordinator, wait_for


def spec(model_dir: Path, name: str = "run", **fields: object) -> RunSpec:
    data: dict[str, object] = {
        "name": name,
        "stages": ["search", "clone"],
        "base_model": str(model_dir),
        "problems_path": "synth:product?n=3&seed=2",
        "config": {"search": {"iterations": 2}, "clone": {"preset": "cpu"}},
    }
    data.update(fields)
    return RunSpec.model_validate(data)


def test_start_is_idempotent_under_a_request_id(coordinator: Coordinator, model_dir: Path) -> None:
    client = coordinator.client
    first = client.start(spec(model_dir), client_request_id="req-1")
    again = client.start(spec(model_dir), client_request_id="req-1")
    assert again.run_id == first.run_id
    with pytest.raises(grpc.RpcError) as info:
        client.start(spec(model_dir, name="other"), client_request_id="req-1")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.run_id in str(info.value.details())
    other = client.start(spec(model_dir), client_request_id="req-2")
    assert other.run_id != first.run_id
    assert len(client.list().runs) == 2
    assert sorted(p.name for p in (coordinator.data_dir / "runs").iterdir()) == sorted(
        [first.run_id, other.run_id]
    )


def test_concurrent_starts_with_one_request_id_make_one_run(
    coordinator: Coordinator, model_dir: Path
) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ids.append(coordinator.client.start(spec(model_dir), client_request_id="same").run_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 4
    assert [p.name for p in (coordinator.data_dir / "runs").iterdir()] == [ids[0]]


def test_list_pages_newest_first_without_gaps_or_repeats(
    coordinator: Coordinator, model_dir: Path
) -> None:
    client = coordinator.client
    started = [client.start(spec(model_dir, f"r{i}", stages=["search"])).run_id for i in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = client.list(page_size=2, page_token=token)
        assert len(page.runs) <= 2
        seen += [r.run_id for r in page.runs]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(started))
    assert [r.spec.name for r in client.list(page_size=100).runs] == [
        f"r{i}" for i in reversed(range(5))
    ]


@pytest.mark.parametrize("token", ["garbage", "e30", encode_token("nothex", 1.0), "!" * 500])
def test_a_bad_page_token_is_refused(coordinator: Coordinator, token: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        coordinator.client.list(page_token=token)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("page_token:")


def test_page_tokens_round_trip() -> None:
    assert decode_token(encode_token("0123456789abcdef", 12.5)) == (12.5, "0123456789abcdef")
    assert decode_token(encode_token("0123456789abcdef", True)) is None  # type: ignore[arg-type]


def test_unknown_and_malformed_run_ids(coordinator: Coordinator) -> None:
    client = coordinator.client
    for call in (client.get, client.cancel, lambda rid: list(client.watch(rid))):
        with pytest.raises(grpc.RpcError) as info:
            call("0123456789abcdef")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        for bad in ("", "../../x", "astro:run:index", "x" * 5000):
            with pytest.raises(grpc.RpcError) as info:
                call(bad)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert str(info.value.details()).startswith("run_id:")
    with pytest.raises(grpc.RpcError) as info:
        client.list(page_size=-1)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_resumes_after_a_reconnect_without_loss_or_repeats(
    start_coordinator: object, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRO_FAKE_GENERATE_DELAY", "0.05")
    coordinator = start_coordinator()  # type: ignore[operator]
    client = coordinator.client
    rid = client.start(spec(model_dir)).run_id
    received = []
    for event in client.watch(rid):  # disconnect after a few events, mid-run
        received.append(event)
        if len(received) == 3:
            break
    assert client.get(rid).state not in ("succeeded", "failed", "cancelled")
    for event in client.watch(rid, after_event_id=received[-1].event_id):
        received.append(event)
    whole = list(client.watch(rid))
    assert [e.event_id for e in received] == [e.event_id for e in whole]
    assert len({e.event_id for e in whole}) == len(whole)
    assert [(e.stage, e.state) for e in whole if e.state != "running" or e.done == 0][:1] == [
        ("", "pending")
    ]
    assert (whole[-1].stage, whole[-1].state) == ("", "succeeded")
    stages = [e.stage for e in whole if e.stage]
    assert stages.index("clone") > max(i for i, s in enumerate(stages) if s == "search")
    # a watch from the last event of an ended run ends at once
    assert list(client.watch(rid, after_event_id=whole[-1].event_id)) == []
    with pytest.raises(grpc.RpcError) as info:
        list(client.watch(rid, after_event_id="not-an-id"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_stops_the_running_search_and_keeps_artifacts(
    start_coordinator: object, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRO_FAKE_GENERATE_DELAY", "0.3")
    coordinator = start_coordinator()  # type: ignore[operator]
    client = coordinator.client
    rid = client.start(spec(model_dir, config={"search": {"iterations": 50}})).run_id
    store = RunStore(redis.Redis.from_url(coordinator.redis_url, decode_responses=True))
    wait_for(client, rid, until=lambda s: bool(store.stage(rid, "search").handle))
    search_id = store.stage(rid, "search").handle["search_id"]
    cancelled = client.cancel(rid)
    assert cancelled.state == "cancelled" and cancelled.message == "cancelled"
    assert cancelled.stages[0].state == "cancelled"
    status = wait_for(client, rid, until=lambda s: s.stages[0].message != "cancelled")
    assert status.stages[0].message == f"cancelled; search {search_id} cancelled"
    assert status.stages[1].state == "pending"
    jobs = JobStore(store.client)
    assert jobs.state(search_id) == "cancelled"
    assert client.cancel(rid).state == "cancelled"  # cancelling again changes nothing
    assert (Path(status.output_dir) / "inputs" / "problems.jsonl").is_file()


def test_a_cancelled_pending_run_never_starts(start_coordinator: object, model_dir: Path) -> None:
    api_only = start_coordinator(worker=False)  # type: ignore[operator]
    rid = api_only.client.start(spec(model_dir)).run_id
    assert api_only.client.get(rid).state == "pending"
    assert api_only.client.cancel(rid).state == "cancelled"
    driver = start_coordinator()  # type: ignore[operator]
    store = RunStore(redis.Redis.from_url(driver.redis_url, decode_responses=True))
    deadline = time.monotonic() + 10
    while store.client.xlen("astro:run:queue") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.client.xlen("astro:run:queue"), "the cancelled run's entry was not dropped"
    status = driver.client.get(rid)
    assert status.state == "cancelled"
    assert [s.state for s in status.stages[:2]] == ["pending", "pending"]
    assert not store.stage(rid, "search").handle  # no search was ever made


def test_with_auth_on_a_call_without_the_token_is_refused(
    start_coordinator: object, model_dir: Path
) -> None:
    from services.coordinator.runs.client import RunsClient

    coordinator = start_coordinator(service={"auth": {"token": "s3cret"}})  # type: ignore[operator]
    rid = coordinator.client.start(spec(model_dir)).run_id
    with RunsClient(coordinator.address) as anonymous:
        for call in (anonymous.list, lambda: anonymous.get(rid), lambda: anonymous.cancel(rid)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wait_for(coordinator.client, rid).state == "succeeded"


def test_a_search_started_again_goes_on_with_the_same_search(
    start_coordinator: object, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRO_FAKE_GENERATE_DELAY", "0.2")
    first = start_coordinator()  # type: ignore[operator]
    rid = first.client.start(spec(model_dir, config={"search": {"iterations": 6}})).run_id
    store = RunStore(redis.Redis.from_url(first.redis_url, decode_responses=True))
    jobs = JobStore(store.client)
    wait_for(first.client, rid, until=lambda s: bool(store.stage(rid, "search").handle))
    search_id = store.stage(rid, "search").handle["search_id"]
    wait_for(first.client, rid, until=lambda s: jobs.status(search_id).nodes > 1)
    first.service.stop()  # a graceful stop hands the run back; its search stays in Redis
    second = start_coordinator()  # type: ignore[operator]
    status = wait_for(second.client, rid, timeout=120)
    assert status.state == "succeeded", status.message
    assert status.stages[0].attempts == 2
    assert status.artifacts["search.search_id"] == search_id  # the same search, not a new one
    assert jobs.status(search_id).problems_done == 3


def test_start_is_refused_while_too_many_runs_are_unfinished(
    start_coordinator: object, model_dir: Path
) -> None:
    api_only = start_coordinator(worker=False, max_unfinished_runs=2)  # type: ignore[operator]
    client = api_only.client
    first = client.start(spec(model_dir), client_request_id="one").run_id
    client.start(spec(model_dir))
    with pytest.raises(grpc.RpcError) as info:
        client.start(spec(model_dir))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_unfinished_runs" in str(info.value.details())
    assert len(client.list().runs) == 2
    # a retry of a run already started is answered, full or not
    assert client.start(spec(model_dir), client_request_id="one").run_id == first
    client.cancel(first)
    driver = start_coordinator(max_unfinished_runs=2)  # type: ignore[operator]
    deadline = time.monotonic() + 30
    while True:  # the cancelled run's entry is dropped, the other run is driven to its end
        try:
            driver.client.start(spec(model_dir))
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            time.sleep(0.2)
