"""RunStore on a real Redis: transitions only from the states they allow, each with its event
in the same transaction; paging with ties; a watcher told when the capped log dropped
events it has not seen."""

from __future__ import annotations

import json

import pytest

from services.coordinator.runs.store import (
    INDEX,
    EventsTrimmed,
    RunStore,
    StageRecord,
    idem_key,
    run_key,
)


@pytest.fixture
def store(redis_handle: object) -> RunStore:
    return RunStore(redis_handle.new_client(), events_maxlen=10)  # type: ignore[attr-defined]


def create(store: RunStore, rid: str, request_id: str = "", digest: str = "d") -> tuple[str, bool]:
    stages = [StageRecord("search", "search"), StageRecord("clone", "clone"),
              StageRecord("sft", "sft", planned=False, state="skipped")]  # fmt: skip
    return store.create(
        rid, name=rid, spec_json="{}", output_dir="/tmp/x", stages=stages,
        client_request_id=request_id, digest=digest,
    )  # fmt: skip


def cleanup(store: RunStore, *rids: str) -> None:
    for rid in rids:
        keys = store.client.keys(run_key(rid) + "*")
        if keys:
            store.client.delete(*keys)
        store.client.zrem(INDEX, rid)


def events(store: RunStore, rid: str) -> list[tuple[str, str]]:
    return [(e.stage, e.state) for e in store.events(rid, "", 1000)]


def test_transitions_follow_the_state_machine(store: RunStore) -> None:
    rid = "a000000000000001"
    try:
        assert create(store, rid) == (rid, True)
        assert store.begin_stage(rid, "search") is None  # the run is not running yet
        assert store.start_run(rid)
        assert store.begin_stage(rid, "search") == 1
        assert store.begin_stage(rid, "search") == 2  # started again after a crash
        assert store.progress(rid, "search", 1, 3, {"nodes": 5.0})
        assert store.finish_stage(rid, "search", {"trees": "/t"}, {"trees": 3.0}, {"trees": "h"})
        assert store.begin_stage(rid, "search") is None  # a finished stage is never redone
        assert not store.progress(rid, "search", 2, 3)
        assert store.begin_stage(rid, "clone") == 1
        assert store.cancel(rid)
        assert not store.cancel(rid)
        assert store.begin_stage(rid, "clone") is None
        assert not store.fail_stage(rid, "clone", "late")  # a cancelled run does not fail
        assert store.stage_stopped(rid, "clone", "cancelled; its work stopped")
        record = store.get(rid)
        assert record is not None
        assert record.state == "cancelled" and record.stage == "clone"
        assert record.artifacts() == {"search.trees": "/t"}
        search = record.stage_record("search")
        assert (search.state, search.attempts, search.metrics) == (
            "succeeded",
            2,
            {"nodes": 5.0, "trees": 3.0},
        )
        assert search.digests == {"trees": "h"}
        assert record.stage_record("clone").message == "cancelled; its work stopped"
        assert record.stage_record("sft").state == "skipped"
        assert not store.finish_run(rid)
        assert events(store, rid) == [
            ("", "pending"), ("", "running"), ("search", "running"), ("search", "running"),
            ("search", "running"), ("search", "succeeded"), ("clone", "running"),
            ("clone", "cancelled"), ("", "cancelled"), ("clone", "cancelled"),
        ]  # fmt: skip
    finally:
        cleanup(store, rid)


def test_a_failed_stage_fails_the_run_once(store: RunStore) -> None:
    rid = "a000000000000002"
    try:
        create(store, rid)
        store.start_run(rid)
        store.begin_stage(rid, "search")
        assert store.fail_stage(rid, "search", "boom")
        assert not store.fail_stage(rid, "search", "again")
        assert not store.cancel(rid)
        record = store.get(rid)
        assert record is not None
        assert (record.state, record.message) == ("failed", "search: boom")
        assert record.stage_record("search").message == "boom"
        assert record.finished_unix > 0
    finally:
        cleanup(store, rid)


def test_idempotency_key_and_its_digest(store: RunStore) -> None:
    rid, other = "a000000000000003", "a000000000000004"
    try:
        assert create(store, rid, "k-1", "d1") == (rid, True)
        assert create(store, other, "k-1", "d1") == (rid, False)
        assert not store.exists(other)
        with pytest.raises(ValueError, match="already used for run a000000000000003"):
            create(store, other, "k-1", "d2")
        assert not store.exists(other)
    finally:
        store.client.delete(idem_key("k-1"))
        cleanup(store, rid, other)


def test_pages_break_ties_by_run_id(store: RunStore) -> None:
    rids = [f"b00000000000000{i}" for i in range(5)]
    try:
        for rid in rids:
            create(store, rid)
        store.client.zadd(INDEX, {rid: 100.0 for rid in rids[:3]} | {rids[3]: 50.0, rids[4]: 200.0})
        mine = set(rids)
        seen: list[str] = []
        before = None
        while True:
            page = store.page(2, before)
            if not page:
                break
            seen += [r for r, _ in page if r in mine]
            before = (page[-1][1], page[-1][0])
        assert seen[:5] == [rids[4], rids[2], rids[1], rids[0], rids[3]]
    finally:
        cleanup(store, *rids)


def test_a_watcher_behind_the_capped_log_is_told(store: RunStore) -> None:
    rid = "a000000000000005"
    try:
        create(store, rid)
        store.start_run(rid)
        store.begin_stage(rid, "search")
        first = store.events(rid, "", 3)
        for done in range(200):
            store.progress(rid, "search", done, 200)
        with pytest.raises(EventsTrimmed, match="after_event_id: events after"):
            store.events(rid, first[0].event_id)
        recent = store.events(rid, "", 1000)
        assert len(recent) < 200
        assert store.events(rid, recent[-2].event_id) == recent[-1:]
        total = int(store.client.hget(run_key(rid), "events_total"))  # type: ignore[arg-type]
        assert total == 203
    finally:
        cleanup(store, rid)


def test_records_are_plain_json_a_person_can_read(store: RunStore) -> None:
    rid = "a000000000000006"
    try:
        create(store, rid)
        raw = store.client.hgetall(run_key(rid, "stage:search"))
        assert json.loads(raw["artifacts"]) == {} and raw["state"] == "pending"
        entry = store.client.xrange(run_key(rid, "events"))[0][1]
        assert json.loads(entry["event"])["state"] == "pending"
    finally:
        cleanup(store, rid)
