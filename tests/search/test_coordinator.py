"""The SearchCoordinator service in-process on loopback, searching with scripted backends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.coordinator.convert import tree_from_proto
from services.coordinator.server import register
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread

FAKES = "tests.search.fakes:scripted_backends"


def coordinator(redis_url: str, **settings: object) -> ServiceThread:
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis_url,
        grace_seconds=1,
        settings={"backends": FAKES, "poll_seconds": 0.1, "default_preset": "tiny", **settings},
    )
    return ServiceThread("coordinator", register, config)


@pytest.fixture
def stub(search_redis_url: str) -> Iterator[SearchCoordinatorStub]:
    with coordinator(search_redis_url) as svc:
        yield SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))


def problems(count: int) -> list[common_pb2.Problem]:
    return [
        common_pb2.Problem(id=f"q{i}", problem=f"What is {i} / {i}?", answer="1")
        for i in range(count)
    ]


def wait_final(stub: SearchCoordinatorStub, sid: str) -> search_pb2.SearchStatus:
    events = list(stub.WatchSearch(search_pb2.GetSearchRequest(search_id=sid), timeout=60))
    assert events and events[-1].state in ("succeeded", "failed", "cancelled")
    dones = [e.done for e in events]
    assert dones == sorted(dones) and events[-1].total == 3
    return stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))


def test_search_runs_to_trees(stub: SearchCoordinatorStub) -> None:
    request = search_pb2.StartSearchRequest(
        problems=problems(3), preset="tiny", config_yaml="iterations: 4", client_request_id="r1"
    )
    sid = stub.StartSearch(request).search_id
    status = wait_final(stub, sid)
    assert status.state == "succeeded", status.message
    assert (status.problems_done, status.problems_total) == (3, 3)
    assert status.solved_fraction == 1.0  # the scripted policy reaches \boxed{1}
    trees = [
        tree_from_proto(t) for t in stub.ExportTrees(search_pb2.GetSearchRequest(search_id=sid))
    ]
    assert [t.problem_id for t in trees] == ["q0", "q1", "q2"]
    assert status.nodes == sum(len(t.nodes) for t in trees)
    for tree in trees:
        assert tree.stats["iterations"] == 4 and tree.config["iterations"] == 4
        assert any(n.correct for n in tree.terminals())
        assert any(n.correct is False for n in tree.terminals())
    # three trees searched together: a round costs at most two generator calls for all
    assert 0 < status.generator_calls <= 2 * 4
    one = tree_from_proto(stub.GetTree(search_pb2.GetTreeRequest(search_id=sid, problem_id="q1")))
    assert one.to_dict() == trees[1].to_dict()
    # the same client request id gives the same search and queues nothing new
    assert stub.StartSearch(request).search_id == sid
    again = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
    assert (again.problems_done, again.problems_total, again.nodes) == (3, 3, status.nodes)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"config_yaml": "k: 0"}, "k"),
        ({"config_yaml": "no_such_knob: 1"}, "no_such_knob"),
        ({"config_yaml": "[1, 2]"}, "config_yaml"),
        ({"preset": "huge"}, "preset"),
        ({"problems": [common_pb2.Problem(problem="2+2?", answer="")]}, "problems[0].answer"),
        ({"problems": [common_pb2.Problem(problem=" ", answer="1")]}, "problems[0].problem"),
        ({"problems": []}, "problems"),
        ({"dataset_path": "/no/such/file.jsonl"}, "dataset_path"),
        ({"limit": -1}, "limit"),
    ],
)
def test_bad_requests_name_the_field(
    stub: SearchCoordinatorStub, fields: dict[str, object], named: str
) -> None:
    request = search_pb2.StartSearchRequest(problems=problems(1))
    for name, value in fields.items():
        if name == "problems":
            del request.problems[:]
            request.problems.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as info:
        stub.StartSearch(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in info.value.details()


def test_dataset_path_limit_unknown_ids_and_cancel(
    stub: SearchCoordinatorStub, tmp_path: Path
) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"{i} times 1?", "answer": "1", "id": f"d{i}"}) + "\n"
            for i in range(5)
        )
    )
    request = search_pb2.StartSearchRequest(
        dataset_path=str(data), limit=3, preset="tiny", config_yaml="iterations: 50"
    )
    sid = stub.StartSearch(request).search_id
    status = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
    assert status.problems_total == 3 and status.state == "running"
    cancelled = stub.CancelSearch(search_pb2.GetSearchRequest(search_id=sid))
    assert cancelled.state == "cancelled"
    time.sleep(0.5)
    assert stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid)).state == "cancelled"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSearch(search_pb2.GetSearchRequest(search_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTree(search_pb2.GetTreeRequest(search_id=sid, problem_id="zzz"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
