"""The SearchCoordinator and its search against a hostile or careless client, a broken
generator, a Redis that goes away and a replica that stalls: every bad request is refused
with a status naming the field (never INTERNAL), a slow request does not stall the others,
and nothing stored is lost or overwritten."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from astro_core.problems import Problem
from astro_core.protocols import Completion
from astro_core.search import MCTS, MemoryTreeStore, SearchConfig, TreeStore
from astro_core.search.mcts import GeneratorReplyError
from services.coordinator import search_service
from services.coordinator.jobs import JobStore, tree_key
from services.coordinator.redis_tree_store import RedisTreeStore
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.worker import Backends, SearchWorker
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.redis_store import connect_redis
from tests.rpc import refused
from tests.search.fakes import (
    TEMPLATE,
    ExactVerifier,
    RandomPolicy,
    ScriptedGenerator,
    endless_policy,
    policy_expand,
    policy_rollout,
)
from tests.search.invariants import check_tree
from tests.search.test_coordinator import (
    coordinator,
    coordinator_over,
    final,
    problems,
    scripted,
    start_error,
)


@pytest.fixture
def stub(search_redis_url: str, tmp_path: Path) -> Iterator[SearchCoordinatorStub]:
    with coordinator(search_redis_url, dataset_roots=[str(tmp_path)]) as svc:
        yield SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))


def start(stub: SearchCoordinatorStub, **fields: Any) -> str:
    request = search_pb2.StartSearchRequest(**{"problems": problems(1), **fields})
    return str(stub.StartSearch(request, timeout=30).search_id)


# ---- StartSearch -------------------------------------------------------------------------


def test_nested_or_huge_config_yaml_is_refused_naming_the_field(
    stub: SearchCoordinatorStub,
) -> None:
    """Regression: nested YAML overflowed the parser's recursion (INTERNAL RecursionError),
    and 1 MB of YAML was parsed (and started a search)."""
    nested = {
        "flow lists": "k: " + "[" * 5000 + "]" * 5000,
        "flow mappings": "k: " + "{a: " * 3000 + "1" + "}" * 3000,
    }
    for label, text in nested.items():
        details = refused(start, stub, config_yaml=text)
        assert details.startswith("config_yaml: nests lists or mappings too deeply"), label
    deep_block = "k:\n" + "".join(" " * i + "a:\n" for i in range(1, 350))  # 62 kB: parses
    assert refused(start, stub, config_yaml=deep_block).startswith(
        "config_yaml: invalid config: k:"
    )
    huge = "iterations: 2\n" + "#" * (1024 * 1024)
    assert refused(start, stub, config_yaml=huge) == "config_yaml: longer than 65536 characters"


def test_parsing_a_config_does_not_stall_other_calls(
    stub: SearchCoordinatorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: StartSearch parsed its config on the event loop, so every other call of
    the coordinator waited for it (60k YAML keys: 9 s)."""
    load = search_service.load_search_config

    def slow_load(*args: Any, **kwargs: Any) -> SearchConfig:  # as a big config on a slow host
        time.sleep(3.0)
        return load(*args, **kwargs)

    monkeypatch.setattr(search_service, "load_search_config", slow_load)
    started: list[str] = []
    worker = threading.Thread(target=lambda: started.append(start(stub)), daemon=True)
    worker.start()
    time.sleep(0.5)  # the StartSearch is parsing now
    began = time.monotonic()
    refused(
        stub.GetSearch,
        search_pb2.GetSearchRequest(search_id="0123456789abcdef"),
        code=grpc.StatusCode.NOT_FOUND,
    )
    took = time.monotonic() - began
    worker.join(timeout=30)
    assert started, "the slow StartSearch failed"
    assert took < 1.5, f"GetSearch waited {took:.1f} s for another call's config parsing"


@pytest.mark.parametrize(
    ("config_yaml", "named"),
    [
        # regression: at c_puct 0 an infinite virtual loss made every PUCT score NaN, no
        # child could be selected, and the search failed with "AssertionError: "
        ("virtual_loss: 1.0e+308", "config_yaml: invalid config: virtual_loss: "),
        # regression: the generator refuses stop strings over 256 characters, so the search
        # failed at its first round instead of at StartSearch
        ("step_delimiter: '" + "-" * 300 + "'", "config_yaml: invalid config: step_delimiter: "),
        # regression: a boolean passed as a number (k: true searched with k=1)
        ("k: true", "config_yaml: invalid config: k: Value error, a boolean is not"),
        ("seed: false", "config_yaml: invalid config: seed: Value error, a boolean is not"),
    ],
)
def test_config_values_the_search_cannot_run_are_refused(
    stub: SearchCoordinatorStub, config_yaml: str, named: str
) -> None:
    assert refused(start, stub, config_yaml=config_yaml).startswith(named)


def test_the_largest_virtual_loss_still_selects() -> None:
    """The bound on virtual_loss keeps PUCT finite with c_puct 0 and many selections."""
    cfg = SearchConfig(
        c_puct=0.0, virtual_loss=1_000_000, parallel_selections=64, k=3, rollouts=2,
        iterations=40, max_depth=6, max_step_tokens=4, max_solution_tokens=40,
    )  # fmt: skip
    policy = RandomPolicy(5, cfg.max_step_tokens, cfg.max_solution_tokens)
    [tree] = MCTS(policy, ExactVerifier(), MemoryTreeStore(), cfg, TEMPLATE).run([PROBLEM])
    check_tree(cfg, tree, PROBLEM.answer)


def test_an_overlong_dataset_path_is_an_unknown_dataset(
    stub: SearchCoordinatorStub, tmp_path: Path
) -> None:
    """Regression: a name longer than the file system takes (ENAMETOOLONG) was INTERNAL."""
    for path in ["a" * 5000, str(tmp_path / ("a" * 300)), "../" + "b" * 300]:
        assert "dataset_path: no dataset" in start_error(stub, path), path


def test_problem_ids_are_unique_and_printable_and_answers_given(
    stub: SearchCoordinatorStub, tmp_path: Path
) -> None:
    """Regression: problems with one id were accepted (GetTree found only the first, the
    exported trees could not be told apart), an id without a name took its index and could
    repeat a given one, ids could hold terminal escapes, and a dataset row's empty answer was
    accepted as the gold."""

    def inline(*given: tuple[str, str]) -> str:
        items = [common_pb2.Problem(id=i, problem="1 / 1?", answer=a) for i, a in given]
        return refused(start, stub, problems=items)

    assert inline(("x", "1"), ("x", "1")) == "problems[1].id: 'x' is also the id of problems[0]"
    assert inline(("1", "1"), ("", "1")) == "problems[1].id: '1' is also the id of problems[0]"
    assert inline(("\x1b]0;owned\x07", "1")).startswith("problems[0].id: '\\x1b]0;owned")
    assert inline(("a\nb", "1")).endswith("holds control characters")

    def dataset(*rows: dict[str, Any]) -> str:
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps({"problem": "1 / 1?", **r}) + "\n" for r in rows))
        return start_error(stub, str(path))

    assert dataset({"id": "a", "answer": "1"}, {"id": "a", "answer": "2"}) == (
        "dataset_path: problem 2.id: 'a' is also the id of dataset_path: problem 1"
    )
    empty = dataset({"answer": ""})
    assert empty == "dataset_path: problem 1.answer: is empty (a gold answer is needed)"
    # the ids as given, and one index each where none is given, find their trees
    sid = start(stub, problems=[common_pb2.Problem(problem="2 / 2?", answer="1")] + problems(2))
    status = final(stub, sid, within=30)
    assert status.state == "succeeded", status.message
    for pid in ["0", "q0", "q1"]:
        tree = stub.GetTree(search_pb2.GetTreeRequest(search_id=sid, problem_id=pid))
        assert tree.problem_id == pid
    for pid, code in [("q2", grpc.StatusCode.NOT_FOUND), ("", grpc.StatusCode.INVALID_ARGUMENT)]:
        request = search_pb2.GetTreeRequest(search_id=sid, problem_id=pid)
        assert refused(stub.GetTree, request, code=code).startswith("problem_id: ")


def test_a_model_ref_is_checked_at_start(stub: SearchCoordinatorStub) -> None:
    """Regression: any ModelRef was recorded (a negative version, a 1 MB name) and failed,
    if ever, only when a replica set the search up."""
    for model, named in [
        (common_pb2.ModelRef(name="m", version=-1), "model.version: "),
        (common_pb2.ModelRef(name="m" * 1_000_000), "model.name: "),
    ]:
        assert refused(start, stub, model=model).startswith(named)


def test_a_failed_start_leaves_its_request_id_free(
    search_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the client_request_id was claimed before the search was recorded; a start
    that failed in between left the id naming no search, and the client's retry got that id
    back, NOT_FOUND for ever."""
    with coordinator(search_redis_url, worker=False) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        ensure = JobStore.ensure_group
        failures = [redis.ConnectionError("Connection reset by peer")]

        def flaky(self: JobStore) -> None:  # Redis drops the connection mid-start, once
            if failures:
                raise failures.pop()
            ensure(self)

        monkeypatch.setattr(JobStore, "ensure_group", flaky)
        request = search_pb2.StartSearchRequest(problems=problems(2), client_request_id="once")
        try:
            sid = stub.StartSearch(request).search_id
        except grpc.RpcError:
            sid = stub.StartSearch(request).search_id  # the client tries again
        status = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
        assert status.problems_total == 2
        assert stub.StartSearch(request).search_id == sid


# ---- the other calls ---------------------------------------------------------------------


def test_search_ids_that_name_other_keys_are_not_found(stub: SearchCoordinatorStub) -> None:
    """Regression: "ID:counters" (any suffix naming another key of search ID) reached Redis:
    GetSearch and CancelSearch were INTERNAL (WRONGTYPE, KeyError), ExportTrees streamed
    nothing as if the search existed."""
    sid = start(stub, config_yaml="iterations: 2")
    assert final(stub, sid).state == "succeeded"
    for suffix in [":problems", ":counters", ":done", ":finished_by", ":ids", "*", " "]:
        other = search_pb2.GetSearchRequest(search_id=sid + suffix)
        for call in [stub.GetSearch, stub.CancelSearch, stub.WatchSearch, stub.ExportTrees]:
            details = refused(call, other, code=grpc.StatusCode.NOT_FOUND)
            assert details == f"search_id: no search {sid + suffix!r}"
        tree = search_pb2.GetTreeRequest(search_id=sid + suffix, problem_id="q0")
        refused(stub.GetTree, tree, code=grpc.StatusCode.NOT_FOUND)
    assert stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid)).state == "succeeded"


def test_a_lost_redis_is_unavailable_not_internal(tmp_path: Path) -> None:
    """Regression: with Redis gone every call failed INTERNAL, with a traceback in the log."""
    handle = connect_redis(None, tmp_path / "redis")
    try:
        with coordinator(handle.url, worker=False) as svc:
            stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
            sid = start(stub)
            handle.close()
            get = search_pb2.GetSearchRequest(search_id=sid)
            calls: list[tuple[Callable[..., Any], Any]] = [
                (stub.StartSearch, search_pb2.StartSearchRequest(problems=problems(1))),
                (stub.GetSearch, get),
                (stub.WatchSearch, get),
                (stub.ExportTrees, get),
                (stub.CancelSearch, get),
                (stub.GetTree, search_pb2.GetTreeRequest(search_id=sid, problem_id="q0")),
            ]
            for call, request in calls:
                details = refused(call, request, code=grpc.StatusCode.UNAVAILABLE)
                assert details.startswith("the coordinator's search store is unavailable: ")
    finally:
        handle.close()


def test_status_and_tree_reads_do_not_grow_with_the_search(tmp_path: Path) -> None:
    """Regression: GetSearch (and each WatchSearch poll) read every tree's node count, one
    command per problem (4 s for 100k problems), and GetTree read every problem to find one
    id."""
    handle = connect_redis(None, tmp_path / "redis")
    try:
        with coordinator(handle.url, worker=False) as svc:
            stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=60))
            sid = start(stub, problems=problems(3000))
            client = handle.new_client()

            def calls(command: str) -> int:
                stats = client.info("commandstats").get(f"cmdstat_{command}", {})
                return int(stats.get("calls", 0))

            before = calls("hlen"), calls("lrange")
            status = stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid))
            request = search_pb2.GetTreeRequest(search_id=sid, problem_id="q2999")
            missing = refused(stub.GetTree, request, code=grpc.StatusCode.NOT_FOUND)
            assert missing == "problem_id: 'q2999' not searched yet"
            assert (status.problems_total, status.nodes) == (3000, 0)
            assert (calls("hlen"), calls("lrange")) == before
    finally:
        handle.close()


# ---- the search against a broken generator -------------------------------------------------

PROBLEM = Problem(id="p", problem="What is 1?", answer="1")
Mangle = Callable[[list[Completion]], list[Completion]]


@dataclasses.dataclass
class Mangled:
    """A generator whose reply to call number `on_call` (every call: 0) `mangle` changes."""

    mangle: Mangle
    on_call: int = 0
    inner: Any = dataclasses.field(
        default_factory=lambda: ScriptedGenerator(policy_expand, policy_rollout)
    )
    calls: int = 0

    def generate(self, prompts: Sequence[str], **kw: Any) -> list[Completion]:
        out = self.inner.generate(prompts, **kw)
        self.calls += 1
        return self.mangle(out) if self.on_call in (0, self.calls) else out


def logprobs(value: float) -> Mangle:
    return lambda out: [dataclasses.replace(c, cumulative_logprob=value) for c in out]


# Call 1 expands the root (1 prompt, n=k=2); call 2 values the root and its 2 children (3
# prompts, n=M=2).
@pytest.mark.parametrize(
    ("on_call", "mangle", "says"),
    [
        (2, lambda out: out[:-1], "generator returned 5 completions for 3 prompts x n=2"),
        (2, lambda out: out + out[:1], "generator returned 7 completions for 3 prompts x n=2"),
        (
            2,
            lambda out: out[::-1],
            "generator returned completion 0 for prompt 2, expected 0",
        ),  # fmt: skip
        (1, lambda out: [], "generator returned 0 completions for 1 prompts x n=2"),
        (1, logprobs(math.nan), "generator returned a step log-probability of [nan, nan]"),
        (1, logprobs(math.inf), "generator returned a step log-probability of [inf, inf]"),
        (
            1,
            lambda out: [dataclasses.replace(c, num_tokens=-5) for c in out],
            "generator returned completion 0 with text str and -5 tokens",
        ),
    ],
)
def test_a_reply_that_breaks_the_generator_protocol_is_refused(
    on_call: int, mangle: Mangle, says: str
) -> None:
    """Regression: the search reads completions by position, so a reply one short gave a
    node fewer rollouts or one prompt's steps to another, silently; an empty one was
    "ValueError: max() arg is an empty sequence"; NaN or +inf log-probabilities made every
    PUCT score NaN and the next round failed with "AssertionError: "."""
    cfg = SearchConfig(k=2, rollouts=2, iterations=4, max_step_tokens=8, max_solution_tokens=40)
    mcts = MCTS(Mangled(mangle, on_call), ExactVerifier(), MemoryTreeStore(), cfg, TEMPLATE)
    with pytest.raises(GeneratorReplyError) as info:
        mcts.run([PROBLEM])
    assert str(info.value) == says


def test_steps_the_model_gives_no_probability_get_uniform_priors() -> None:
    cfg = SearchConfig(k=2, rollouts=2, iterations=3, max_step_tokens=8, max_solution_tokens=40)
    generator = Mangled(logprobs(-math.inf))
    [tree] = MCTS(generator, ExactVerifier(), MemoryTreeStore(), cfg, TEMPLATE).run([PROBLEM])
    first = [n for n in tree.nodes if n.parent == "0" and n.kind == "step"]
    assert [n.prior for n in first] == [0.5, 0.5]


def test_a_generator_reply_that_breaks_the_protocol_fails_the_search_at_once(
    search_redis_url: str,
) -> None:
    """Regression: a generator one completion short made trees with nodes of k-1 children
    and rollout values over M-1 rollouts, and the search succeeded."""
    broken = Mangled(lambda out: out[:-1], on_call=1)
    with coordinator_over(search_redis_url, scripted(generator=broken)) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        status = final(stub, start(stub, problems=problems(2)))
    assert status.state == "failed"
    assert status.message == (
        "search round failed: GeneratorReplyError: generator returned 3 completions for 2 "
        "prompts x n=2"
    )


# ---- replicas ----------------------------------------------------------------------------


def test_a_replica_that_stalled_past_the_reclaim_time_does_not_overwrite_the_new_owner(
    search_redis_url: str,
) -> None:
    """Regression: replica A stalled mid-round (paused, swapped out) longer than
    reclaim_idle_seconds; replica B took its task over and searched on from the stored tree;
    then A woke up and committed its round on top of B's: nodes B had stored rewritten, a
    node expanded twice into the same ids, visits that no longer add up. A's stale round is
    now refused whole (TreeConflict), A lets the tree go without failing the search, and B
    finishes a consistent tree."""
    client: Any = redis.Redis.from_url(search_redis_url, decode_responses=True)
    jobs = JobStore(client)
    jobs.ensure_group()
    cfg = SearchConfig(k=2, rollouts=1, iterations=6, max_depth=10, max_step_tokens=2,
                       max_solution_tokens=100, parallel_selections=1)  # fmt: skip
    sid, _ = jobs.create([PROBLEM], cfg, "tiny", {})
    settings = CoordinatorSettings(reclaim_idle_seconds=0.02, heartbeat_seconds=0.01)
    b = SearchWorker(jobs, Backends(endless_policy(), ExactVerifier(), lambda: TEMPLATE), settings)

    class Stalling:
        """A's generator: in A's second round, B takes the task over and searches a round."""

        def __init__(self) -> None:
            self.inner, self.calls = endless_policy(), 0

        def generate(self, prompts: Sequence[str], **kw: Any) -> list[Completion]:
            self.calls += 1
            if self.calls == 3:  # round 2's expansion: A is stalled here
                time.sleep(0.1)
                assert b.run_once() == 1 and b.active  # B now owns the tree, one round on
            return self.inner.generate(prompts, **kw)

    a = SearchWorker(jobs, Backends(Stalling(), ExactVerifier(), lambda: TEMPLATE), settings)
    a.run_once()  # round 1
    a.run_once()  # round 2, during which B takes over; A's commit comes after B's
    assert not a.active and sid not in a.failures  # A let the tree go, not counted a failure
    while jobs.state(sid) == "running":
        b.run_once()
    assert jobs.state(sid) == "succeeded"
    tree = jobs.tree(sid, 0)
    assert tree is not None
    tokens = {s.node.id: s.tokens for s in jobs.trees.load_nodes(tree_key(sid, 0))}
    check_tree(cfg, tree, PROBLEM.answer, tokens)  # visits add up: no round landed twice
    assert jobs.status(sid).nodes == len(tree.nodes)


def test_stale_commits_are_refused_whole_by_both_stores(search_redis_url: str) -> None:
    client: Any = redis.Redis.from_url(search_redis_url, decode_responses=True)
    cfg = SearchConfig(k=2, rollouts=1, iterations=6, max_depth=10, max_step_tokens=2,
                       max_solution_tokens=100)  # fmt: skip
    stores: list[TreeStore] = [MemoryTreeStore(), RedisTreeStore(client)]
    for store in stores:
        key = f"stale-{time.monotonic_ns()}"
        first = MCTS(endless_policy(), ExactVerifier(), store, cfg, TEMPLATE)
        stale = first.open_tree(PROBLEM, key)
        first.step([stale])
        second = MCTS(endless_policy(), ExactVerifier(), store, cfg, TEMPLATE)
        owner = second.open_tree(PROBLEM, key)
        second.step([owner])
        stored = {s.node.id: s for s in store.load_nodes(key)}
        with pytest.raises(Exception) as info:
            first.step([stale])
        assert type(info.value).__name__ == "TreeConflict", info.value
        assert "the root has 2 visits, the round expected 1" in str(info.value)
        assert {s.node.id: s for s in store.load_nodes(key)} == stored  # nothing written
        if isinstance(store, RedisTreeStore):
            store.delete(key)


def test_a_redis_outage_mid_round_does_not_fail_the_search(
    search_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a round whose commit lost Redis counted as a failed round of the search,
    so a Redis that went away three times (a restart, a failover) failed healthy searches."""
    commit = RedisTreeStore.commit
    outages = [redis.ConnectionError("Connection closed by server.")] * 4

    def flaky(self: RedisTreeStore, *args: Any, **kwargs: Any) -> Any:
        if outages:
            raise outages.pop()
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(RedisTreeStore, "commit", flaky)
    settings = {"reclaim_idle_seconds": 0.2, "heartbeat_seconds": 0.05}
    with coordinator_over(search_redis_url, scripted(), **settings) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        status = final(stub, start(stub, problems=problems(2), config_yaml="iterations: 3"))
    assert status.state == "succeeded", status.message
    assert not outages


def test_a_heartbeat_not_well_within_the_reclaim_time_is_refused() -> None:
    """Regression: heartbeat_seconds 30 with reclaim_idle_seconds 10 was accepted; live
    replicas then took each other's tasks back and forth."""
    with pytest.raises(ValueError, match=r"heartbeat_seconds \(30.0\) must be at most half"):
        CoordinatorSettings(heartbeat_seconds=30, reclaim_idle_seconds=10)
    CoordinatorSettings(heartbeat_seconds=5, reclaim_idle_seconds=10)


def test_a_cancelled_search_cuts_its_generator_call_short(search_redis_url: str) -> None:
    """Regression: CancelSearch left the round's Generate call running to its end (up to
    generate_timeout_seconds, 600 s), the replica's worker blocked for every other search.
    The in-flight call is cancelled (its `cancel` event set) and the worker moves on."""
    hung, cancelled, hanging = threading.Event(), threading.Event(), "What is 0 / 0?"
    policy = ScriptedGenerator(policy_expand, policy_rollout)

    class Hanging:
        def generate(
            self, prompts: Sequence[str], *, cancel: threading.Event | None = None, **kw: Any
        ) -> list[Completion]:
            if not any(hanging in p for p in prompts):
                return policy.generate(prompts, **kw)
            hung.set()
            assert cancel is not None, "the worker's generator call cannot be cancelled"
            if cancel.wait(60):
                cancelled.set()
                raise RuntimeError("cancelled")
            return policy.generate(prompts, **kw)

    with coordinator_over(search_redis_url, scripted(generator=Hanging())) as svc:
        stub = SearchCoordinatorStub(sync_channel(svc.client_config(), default_timeout=30))
        sid = start(stub)
        assert hung.wait(30), "the search never called the generator"
        began = time.monotonic()
        stub.CancelSearch(search_pb2.GetSearchRequest(search_id=sid))
        assert cancelled.wait(5), "the hung generator call was not cancelled"
        assert time.monotonic() - began < 2.0
        other = start(stub, problems=[common_pb2.Problem(id="q1", problem="1 / 1?", answer="1")])
        assert final(stub, other, within=10).state == "succeeded"
        assert stub.GetSearch(search_pb2.GetSearchRequest(search_id=sid)).state == "cancelled"
