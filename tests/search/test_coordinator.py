"""The SearchCoordinator service in-process on loopback, searching with scripted backends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.coordinator.convert import tree_from_proto
from services.coordinator.server import register
from services.coordinator.worker import Backends
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from tests.search.fakes import (
    TEMPLATE,
    ExactVerifier,
    RpcFailure,
    ScriptedGenerator,
    policy_expand,
    policy_rollout,
)

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
def stub(search_redis_url: str, tmp_path: Path) -> Iterator[SearchCoordinatorStub]:
    with coordinator(search_redis_url, dataset_roots=[str(tmp_path)]) as svc:
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
    # elapsed runs from StartSearch to the end of the search, then stays put
    assert status.elapsed_seconds > 0
    time.sleep(0.2)
    later = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
    assert later.elapsed_seconds == pytest.approx(status.elapsed_seconds)
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
        ({"config_yaml": "k: 0"}, "config_yaml: invalid config: k: "),
        ({"config_yaml": "temperature: hot"}, "config_yaml: invalid config: temperature: "),
        ({"config_yaml": "no_such_knob: 1"}, "config_yaml: invalid config: no_such_knob: "),
        ({"config_yaml": "temperature: .inf"}, "config_yaml: invalid config: temperature: "),
        ({"config_yaml": "c_puct: .nan"}, "config_yaml: invalid config: c_puct: "),
        ({"config_yaml": "iterations: 1000000000"}, "config_yaml: invalid config: iterations: "),
        ({"config_yaml": "seed: 100000000000000000000"}, "config_yaml: invalid config: seed: "),
        (
            {"config_yaml": "max_step_tokens: 500\nmax_solution_tokens: 100"},
            "max_step_tokens must not exceed max_solution_tokens",
        ),
        ({"config_yaml": "[1, 2]"}, "config_yaml: must be a mapping"),
        ({"config_yaml": ": :"}, "config_yaml: not valid YAML"),
        ({"preset": "huge"}, "preset: unknown preset 'huge'"),
        ({"problems": [common_pb2.Problem(problem="2+2?", answer="")]}, "problems[0].answer: "),
        ({"problems": [common_pb2.Problem(problem=" ", answer="1")]}, "problems[0].problem: "),
        ({"problems": []}, "problems: no problems"),
        ({"dataset_path": "/no/such/file.jsonl"}, "dataset_path: no dataset '/no/such/file"),
        ({"dataset_path": "MISSING_ANSWER"}, "field 'answer' is missing"),
        ({"problems": [], "dataset_path": "MISSING_ANSWER", "limit": -1}, "limit: "),
        ({"dataset_path": "/no/such/file.jsonl", "problems": problems(1)}, "not both"),
    ],
)
def test_bad_requests_name_the_field(
    stub: SearchCoordinatorStub, fields: dict[str, object], named: str, tmp_path: Path
) -> None:
    request = search_pb2.StartSearchRequest(problems=problems(1))
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"problem": "1+1?"}) + "\n")
    if "dataset_path" in fields and "problems" not in fields:
        del request.problems[:]  # a dataset instead of inline problems
    for name, value in fields.items():
        if value == "MISSING_ANSWER":
            request.dataset_path = str(no_answer)
        elif name == "problems":
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


def test_client_searches_a_dataset_with_config_and_trees_feed_cloning_and_graphs(
    search_redis_url: str, tmp_path: Path
) -> None:
    """SearchClient end to end: a dataset path + config, progress until done, export; the
    exported trees go through the JSONL file into procedure cloning and the tree graph."""
    from astro_core.cloning import CloningConfig, clone_trees
    from astro_core.cloning.graphs import tree_graph
    from astro_core.trees import read_trees, write_trees
    from services.coordinator.client import SearchClient

    data = tmp_path / "p.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"{i} / {i}?", "answer": "1"}) + "\n" for i in range(4))
    )
    roots = [str(tmp_path)]
    with (
        coordinator(search_redis_url, dataset_roots=roots) as svc,
        SearchClient(svc.client_config()) as client,
    ):
        sid = client.start(
            dataset_path=str(data), limit=3, preset="tiny", config_yaml="iterations: 3\nk: 3"
        )
        events = list(client.watch(sid))
        assert events[-1].state == "succeeded" and (events[-1].done, events[-1].total) == (3, 3)
        assert events[-1].metrics["nodes"] > 0 and events[-1].metrics["generator_calls"] > 0
        status = client.status(sid)
        trees = client.export(sid)
        assert client.tree(sid, trees[0].problem_id).to_dict() == trees[0].to_dict()
        with pytest.raises(grpc.RpcError) as info:
            client.status("nope")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert status.problems_done == 3 and status.solved_fraction == 1.0
    assert len(trees) == 3
    for tree in trees:
        assert tree.config["k"] == 3 and tree.config["iterations"] == 3
        first = [n for n in tree.children()["0"] if n.kind == "step"]
        assert len(first) == 3  # k=3 from the config over the preset's k=2
    out = tmp_path / "trees.jsonl"
    write_trees(out, trees)
    again = list(read_trees(out))
    result = clone_trees(again, CloningConfig())
    assert result.summary["trees"] == 3 and result.summary["trees_traced"] == 3
    assert {r.problem_id for r in result.records} == {t.problem_id for t in trees}
    for tree in again:
        dot = tree_graph(tree).to_dot()
        assert all(f'"{n.id}"' in dot for n in tree.nodes)


def start_error(stub: SearchCoordinatorStub, dataset_path: str, **fields: object) -> str:
    """The INVALID_ARGUMENT message StartSearch gives for dataset_path (within 10 s)."""
    request = search_pb2.StartSearchRequest(dataset_path=dataset_path, **fields)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as info:
        stub.StartSearch(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


def test_dataset_paths_stay_inside_the_dataset_roots(
    stub: SearchCoordinatorStub, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Regression: StartSearch read any file the coordinator could (dataset_path=/dev/zero
    read gigabytes past the client's deadline) and its errors told which paths exist.
    The stub's only dataset root is tmp_path."""
    import os

    row = json.dumps({"problem": "1 / 1?", "answer": "1"}) + "\n"
    (tmp_path / "p.jsonl").write_text(row * 3)
    outside = tmp_path_factory.mktemp("outside") / "secret.jsonl"
    outside.write_text(row)
    (tmp_path / "to_outside.jsonl").symlink_to(outside)
    (tmp_path / "to_inside.jsonl").symlink_to(tmp_path / "p.jsonl")

    def anonymous(message: str, path: str) -> str:
        return message.replace(repr(path), "PATH")

    # outside the roots, through a symlink, up and out, a device, a missing file: one answer
    missing = anonymous(
        start_error(stub, str(tmp_path / "missing.jsonl")), str(tmp_path / "missing.jsonl")
    )
    assert missing == (
        "dataset_path: no dataset PATH in the coordinator's dataset roots (setting dataset_roots)"
    )
    for path in [str(outside), str(tmp_path / "to_outside.jsonl"), "../outside/secret.jsonl",
                 "/dev/zero", "/etc/hostname", "/no/such/dir/x.jsonl", "bad\0name"]:  # fmt: skip
        assert anonymous(start_error(stub, path), path) == missing, path
    # inside: a relative path is taken from the root; symlinks within the root are followed
    for path in ["p.jsonl", str(tmp_path / "to_inside.jsonl")]:
        sid = stub.StartSearch(search_pb2.StartSearchRequest(dataset_path=path)).search_id
        status = stub.CancelSearch(search_pb2.GetSearchRequest(search_id=sid))
        assert status.problems_total == 3
    # inside but not a regular file: said so, and a FIFO does not block the call
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    for name in ["folder", "pipe"]:
        assert "is not a regular file" in start_error(stub, str(tmp_path / name))


def test_dataset_size_and_problem_count_are_capped(search_redis_url: str, tmp_path: Path) -> None:
    row = json.dumps({"problem": "1 / 1?", "answer": "1"}) + "\n"
    (tmp_path / "small.jsonl").write_text(row * 4)
    (tmp_path / "ten.jsonl").write_text(row * 10)
    (tmp_path / "big.jsonl").write_text(row * 40)
    settings = {"dataset_roots": [str(tmp_path)], "max_dataset_bytes": 30 * len(row),
                "max_problems": 5}  # fmt: skip
    with coordinator(search_redis_url, **settings) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        assert "more than max_dataset_bytes (" in start_error(stub, "big.jsonl")
        assert "more than max_problems (5)" in start_error(stub, "ten.jsonl")
        assert "more than max_problems (5)" in start_error(stub, "ten.jsonl", limit=6)
        request = search_pb2.StartSearchRequest(problems=problems(6))
        with pytest.raises(grpc.RpcError) as info:
            stub.StartSearch(request)
        assert "more than max_problems (5)" in info.value.details()
        for path, limit, total in [("small.jsonl", 0, 4), ("ten.jsonl", 5, 5)]:
            request = search_pb2.StartSearchRequest(dataset_path=path, limit=limit)
            sid = stub.StartSearch(request).search_id
            status = stub.CancelSearch(search_pb2.GetSearchRequest(search_id=sid))
            assert status.problems_total == total
    # no roots at all: inline problems only
    with coordinator(search_redis_url, dataset_roots=[]) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        assert "no dataset" in start_error(stub, str(tmp_path / "small.jsonl"))


def searches(
    stub: SearchCoordinatorStub, model: common_pb2.ModelRef | None = None, count: int = 3
) -> str:
    request = search_pb2.StartSearchRequest(problems=problems(count), config_yaml="iterations: 2")
    if model is not None:
        request.model.CopyFrom(model)
    return str(stub.StartSearch(request).search_id)


def final(stub: SearchCoordinatorStub, sid: str, within: float = 15) -> search_pb2.SearchStatus:
    deadline = time.monotonic() + within
    while True:
        status = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
        if status.state != "running":
            return status
        assert time.monotonic() < deadline, f"search {sid} still running: {status}"
        time.sleep(0.05)


def coordinator_over(redis_url: str, backends: Backends, **settings: object) -> ServiceThread:
    """A coordinator searching with the given backends (the scripted policy by default)."""
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis_url,
        grace_seconds=1,
        settings={"poll_seconds": 0.05, "default_preset": "tiny", **settings},
    )
    return ServiceThread("coordinator", partial(register, backends=backends), config)


def scripted(load_model: Any = None, generator: Any = None) -> Backends:
    policy = generator or ScriptedGenerator(policy_expand, policy_rollout)
    return Backends(policy, ExactVerifier(), lambda: TEMPLATE, load_model=load_model)


GHOST = common_pb2.ModelRef(name="ghost")


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ],
)
def test_a_setup_error_that_retrying_cannot_fix_fails_the_search_at_once(
    search_redis_url: str, code: grpc.StatusCode
) -> None:
    """Regression: an unknown model (or a refused credential) was retried every reclaim
    period forever, the search `running` with an empty message. It fails at once with the
    error, once for all its problems, and a healthy search beside it finishes."""
    loads: list[dict[str, Any]] = []

    def load_model(ref: dict[str, Any]) -> None:
        loads.append(ref)
        raise RpcFailure(code, "no checkpoint named 'ghost'")

    # reclaim_idle_seconds stays long: nothing may depend on a retry
    with coordinator_over(search_redis_url, scripted(load_model)) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        bad = searches(stub, GHOST)
        good = searches(stub)
        status = final(stub, bad)
        assert status.state == "failed"
        assert status.message == f"search setup failed: {code.name}: no checkpoint named 'ghost'"
        assert final(stub, good).state == "succeeded"
        assert [ref["name"] for ref in loads] == ["ghost"]  # not once per problem


def test_a_transient_setup_error_is_retried_a_bounded_number_of_times(
    search_redis_url: str,
) -> None:
    calls: list[str] = []

    def unreachable(ref: dict[str, Any]) -> None:
        calls.append(ref["name"])
        if ref["name"] == "ghost" or len(calls) == 1:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")

    settings = {"setup_retries": 2, "reclaim_idle_seconds": 0.2, "heartbeat_seconds": 0.05}
    with coordinator_over(search_redis_url, scripted(unreachable), **settings) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        # recovers on its second try ...
        ok = searches(stub, common_pb2.ModelRef(name="flaky"))
        assert final(stub, ok).state == "succeeded"
        assert calls == ["flaky", "flaky"]
        # ... never recovers: 1 try + 2 retries, then failed with the error
        bad = searches(stub, GHOST)
        status = final(stub, bad)
        assert status.state == "failed"
        assert status.message == (
            "search setup failed 3 times: UNAVAILABLE: failed to connect to all addresses"
        )
        assert calls.count("ghost") == 3


def test_a_round_error_that_retrying_cannot_fix_fails_the_search_at_once(
    search_redis_url: str,
) -> None:
    class Refusing:
        def generate(self, prompts: Any, **kw: Any) -> list[Any]:
            raise RpcFailure(grpc.StatusCode.PERMISSION_DENIED, "token lacks generate")

    with coordinator_over(search_redis_url, scripted(generator=Refusing())) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        status = final(stub, searches(stub))
    assert status.state == "failed"
    assert status.message == "search round failed: PERMISSION_DENIED: token lacks generate"


def test_a_cancelled_big_search_is_drained_with_one_state_read_per_claim(
    search_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: each stale task of a cancelled search cost its own state read (and ack),
    so the 100k tasks of a cancelled search held the next search back for a minute."""
    from services.coordinator.jobs import JobStore

    reads: list[str] = []
    state = JobStore.state

    def counted(self: JobStore, sid: str) -> str | None:
        reads.append(sid)
        return state(self, sid)

    monkeypatch.setattr(JobStore, "state", counted)
    with coordinator_over(search_redis_url, scripted()) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=60))
        big = searches(stub, count=5000)
        stub.CancelSearch(search_pb2.GetSearchRequest(search_id=big))
        small = searches(stub)
        assert final(stub, small, within=60).state == "succeeded"
    # 5000 tasks claimed 64 at a time: about 80 claims, each reading the states once
    assert reads.count(big) < 500, reads.count(big)
