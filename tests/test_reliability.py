"""Reliability: what must hold when things go wrong, with real processes and real signals.

- kill -9 of a coordinator mid-search: another replica resumes it from the stored trees;
  nothing is lost (every node the dead one wrote is kept, every tree is complete) and nothing
  is duplicated (each problem finished once, node ids unique, no expansion redone).
- Concurrent registrations from several processes and threads get unique, gapless versions.
- A VerifyBatch whose client gave up (deadline or cancel) frees the verifier's workers within
  one item limit.
- Auth round trip: `astro up` with the token in `auth.token_file` (as the chart sets it) runs a
  search, a registry-backed LoadModel and a verify end to end; a call without it is refused.
- `astro up` supervises: a killed service comes back on the same port (the event logged);
  one that keeps dying stops the platform with exit 1.
- No stray processes: kill -9 of `astro up` takes its services and its embedded Redis with it;
  an in-process `astro search` leaves no redis-server, whether it finishes or is killed.
  (tests/conftest.py also fails the whole run if any process a test started outlives it.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import redis
import yaml

from astro_core.trees import SearchTree
from services.coordinator.jobs import GROUP, TASKS, JobStore
from services.launcher import read_state
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.registry.client import RegistryClient
from services.registry.server import register as registry_service
from services.runtime.client import sync_channel
from services.runtime.config import AuthConfig, ClientConfig, ServiceConfig
from services.runtime.redis_store import RedisHandle
from services.testing import ServiceThread
from tests.conftest import REPO
from tests.registry.conftest import make_tree
from tests.search.invariants import check_tree
from tests.search.replicas import (
    consumer_of,
    coordinator_replicas,
    exported_trees,
    start_search,
    stub_for,
    wait_succeeded,
)
from tests.verifier.strict import ITEM_SECONDS, STUCK, next_small_call_seconds, strict_verifier

pytestmark = pytest.mark.slow
START_TIMEOUT = 180


def test_kill_9_of_a_coordinator_mid_search_resumes_it_nothing_lost_or_duplicated(
    tmp_path: Path, search_redis_url: str
) -> None:
    """Replica A (`astro serve coordinator`, a real process) is killed with SIGKILL
    mid-search; replica B, started after it, takes its tasks over and the search completes.
    Each problem is finished exactly once, every node A stored is kept, none is duplicated,
    and every tree is complete and satisfies the search's invariants
    (tests/search/invariants.py)."""
    client: Any = redis.Redis.from_url(search_redis_url, decode_responses=True)  # str replies
    jobs = JobStore(client)
    problems, iterations = 4, 30
    with coordinator_replicas(tmp_path, search_redis_url) as start:
        a = start("a", 0.5)  # slow: it is caught mid-search
        stub = stub_for(a.address())
        sid = start_search(stub, count=problems, iterations=iterations, max_depth=16)

        def mid_search(tree: SearchTree | None) -> bool:  # backed up twice, not finished
            return tree is not None and 2 <= tree.by_id()["0"].visits < iterations

        deadline = time.monotonic() + 60
        while True:
            if any(mid_search(jobs.tree(sid, i)) for i in range(problems)):
                # freeze A: from here on the store holds everything A ever wrote
                os.kill(a.process.pid, signal.SIGSTOP)
                before = {i: jobs.tree(sid, i) for i in range(problems)}
                if any(mid_search(tree) for tree in before.values()):
                    break
                os.kill(a.process.pid, signal.SIGCONT)  # it finished that tree meanwhile
            assert time.monotonic() < deadline, "replica A made no progress"
            time.sleep(0.1)
        name_a = consumer_of(client, a.process.pid)
        assert name_a is not None
        held = {p["message_id"] for p in client.xpending_range(TASKS, GROUP, "-", "+", 10, name_a)}
        entries = [e for m in held for e in client.xrange(TASKS, m, m) or []]
        held_indices = {int(fields["index"]) for _, fields in entries}
        assert held_indices >= {i for i, tree in before.items() if mid_search(tree)}
        a.kill()  # kill -9: no cleanup of any kind runs in A
        b = start("b", 0.05)
        stub_b = stub_for(b.address())
        wait_succeeded(stub_b, sid)
        finished_by = jobs.finished_by(sid)
        assert sorted(finished_by) == list(range(problems))  # each problem finished, once
        assert all(finished_by[i] != name_a for i in held_indices)  # B took A's tasks over
        counters = client.hgetall(f"astro:search:job:{sid}:counters")
        assert counters["problems_done"] == counters["solved"] == str(problems)  # counted once
        assert jobs.status(sid).problems_done == problems
        exported = exported_trees(stub_b, sid)
    trees = {t.problem_id: t for t in exported}
    assert len(exported) == len(trees) == problems  # one tree a problem
    config = jobs.config(sid)
    for tree_before in before.values():
        if tree_before is None:
            continue
        after = trees[tree_before.problem_id].by_id()
        for node in tree_before.nodes:  # nothing A wrote was lost or rewritten
            assert node.id in after, node.id
            assert (after[node.id].text, after[node.id].parent) == (node.text, node.parent)
    for tree in trees.values():
        ids = [node.id for node in tree.nodes]
        assert len(ids) == len(set(ids)), tree.problem_id  # no node stored twice
        # complete, resumed (not restarted), not overdone: root visits = iterations, k
        # children per expansion (no expansion redone), Q = the backup formula everywhere
        check_tree(config, tree, gold="1")
        assert tree.by_id()["0"].visits == iterations
    assert len(client.xpending_range(TASKS, GROUP, "-", "+", 10, name_a)) == 0
    left = [f for _, f in client.xrange(TASKS) if f["sid"] == sid]
    assert left == []  # every task acknowledged and deleted


REGISTERING_PROCESS = textwrap.dedent(
    """
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    from services.registry.client import RegistryClient

    address, sources = sys.argv[1], sys.argv[2:]
    with RegistryClient(address) as client:
        with ThreadPoolExecutor(len(sources)) as pool:
            infos = list(pool.map(lambda s: client.register("shared", s), sources))
    print(json.dumps({s: i.version for s, i in zip(sources, infos)}))
    """
)


def test_concurrent_registers_from_processes_and_threads_get_unique_gapless_versions(
    redis_handle: RedisHandle, tmp_path: Path
) -> None:
    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis_handle.url,
        settings={
            "artifact_root": str(tmp_path / "artifacts"),
            "key_prefix": f"astro:reg:reliability-{os.getpid()}-{time.monotonic_ns()}:",
        },
    )
    processes, threads = 3, 4
    with ServiceThread("registry", registry_service, config) as registry:
        sources = [
            [str(make_tree(tmp_path / f"p{p}t{t}", files=2, size=256, seed=f"{p}.{t}"))
             for t in range(threads)]
            for p in range(processes)
        ]  # fmt: skip
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", REGISTERING_PROCESS, registry.address, *mine],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                text=True,
            )
            for mine in sources
        ]
        versions: dict[str, int] = {}
        for writer in writers:
            out, _ = writer.communicate(timeout=120)
            assert writer.returncode == 0
            versions.update(json.loads(out))
        with RegistryClient(registry.client_config()) as client:
            listed = client.list("shared")
            # Unique and gapless, and each version holds the files of the call that got it.
            assert sorted(versions.values()) == list(range(1, processes * threads + 1))
            assert sorted(i.version for i in listed) == sorted(versions.values())
            by_version = {i.version: i for i in listed}
            for source, version in versions.items():
                pulled = client.pull("shared", tmp_path / "pulled" / str(version), version)
                assert (pulled / "file0.bin").read_bytes() == (
                    Path(source) / "file0.bin"
                ).read_bytes()
                assert by_version[version].artifact_uri.startswith(str(tmp_path / "artifacts"))
    for key in redis_handle.client.scan_iter(f"{config.settings['key_prefix']}*"):
        redis_handle.client.delete(key)


def test_a_cancelled_verify_batch_frees_the_workers_within_one_item_limit() -> None:
    """Regression: a VerifyBatch whose client gave up kept both workers busy (the next small
    call waited 58 s). Past its deadline, or cancelled, its work is dropped: the next small
    call answers within one item limit (5 s), not after 20 stuck items x 5 s / 2 workers."""
    with strict_verifier() as verifier:
        stub = verifier_pb2_grpc.VerifierStub(sync_channel(verifier.client_config()))
        registry = verifier.runtime.metrics.registry
        batch = verifier_pb2.VerifyBatchRequest(items=[STUCK] * 20)
        with pytest.raises(grpc.RpcError) as raised:
            stub.VerifyBatch(batch, timeout=1.0)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert next_small_call_seconds(stub) < ITEM_SECONDS

        call = stub.VerifyBatch.future(batch)
        time.sleep(1.0)
        call.cancel()
        assert next_small_call_seconds(stub) < ITEM_SECONDS
        assert registry.get_sample_value("astro_verifier_cancelled_total") == 2
        # no abandoned item ran on to its time limit
        assert registry.get_sample_value("astro_verifier_timeouts_total") == 0


# -- `astro up` as a real process ----------------------------------------------------------


@contextmanager
def astro_up(
    tmp_path: Path, config: dict[str, Any]
) -> Iterator[tuple[subprocess.Popen[str], dict]]:
    """`astro up` with `config` (UpConfig) on the embedded Redis; yields it and its state."""
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("REDIS_URL", None)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "astro_cli.main",
            "up",
            "--config",
            str(path),
            "--data-dir",
            str(data),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (state := read_state(data)) is None or state["pid"] != proc.pid:
            assert proc.poll() is None, (
                f"astro up exited: {proc.stderr.read() if proc.stderr else ''}"
            )
            assert time.monotonic() < deadline, "astro up did not start in time"
            time.sleep(0.2)
        yield proc, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


BASE_UP = {"common": {"port": 0, "metrics_port": None, "grace_seconds": 1}}


def test_auth_round_trip_through_astro_up(tmp_path: Path, tiny_model_dir: Path) -> None:
    from astro_core.problems import Problem
    from astro_core.protocols import VerifyItem
    from services.coordinator.client import SearchClient
    from services.generator.client import GeneratorClient
    from services.verifier.client import VerifierClient

    secret = tmp_path / "token"
    secret.write_text("round-trip-secret\n")
    config = {
        "common": {**BASE_UP["common"], "auth": {"token_file": str(secret)}},
        "overrides": {
            "generator": {"settings": {"model": {"path": str(tiny_model_dir)}}},
            "verifier": {"settings": {"workers": 1}},
        },
    }
    with astro_up(tmp_path, config) as (_, state):
        address = {name: info["address"] for name, info in state["services"].items()}
        token = AuthConfig(token_file=str(secret))

        def client(name: str, auth: AuthConfig = token) -> ClientConfig:
            return ClientConfig(address=address[name], auth=auth, timeout_seconds=120)

        # The registry takes the model; the generator loads it from there (generator ->
        # registry with the configured token).
        with RegistryClient(client("registry")) as registry:
            info = registry.register("tiny-llama", tiny_model_dir)
        with GeneratorClient(client("generator")) as generator:
            loaded = generator.load_model(name="tiny-llama", version=info.version)
            assert loaded.version == info.ref
        # A search with the registered model: coordinator -> generator, verifier, and the
        # generator -> registry again.
        with SearchClient(client("coordinator"), timeout=120) as search:
            sid = search.start(
                [Problem("p1", "What is 1 + 1?", "2")],
                preset="tiny",
                config_yaml="iterations: 2\nmax_solution_tokens: 16\n",
                model={"name": "tiny-llama", "version": info.version},
            )
            states = [event.state for event in search.watch(sid)]
            status = search.status(sid)
            assert states[-1] == "succeeded", status
            assert status.nodes > 1
            [tree] = search.export(sid)
            assert len(tree.nodes) > 1
        with VerifierClient(client("verifier")) as verifier:
            assert verifier.verify(VerifyItem("so \\boxed{2}", "2")).correct

        # Without the token (or with a wrong one) every service refuses.
        for name in address:
            for auth in (AuthConfig(), AuthConfig(token="wrong")):
                with pytest.raises(grpc.RpcError) as err, RegistryClient(client(name, auth)) as c:
                    c.list()  # any method: auth comes first, even for another service's API
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name


# A stand-in trainer job: it opens the registry exactly as `astro train` does (the token from
# its environment) and registers one checkpoint; a trainer without the token fails. It notes
# the data dir it was given (where a real trainer caches the checkpoints it pulls).
REGISTERING_TRAINER = textwrap.dedent(
    """
    import os, sys, yaml
    from contextlib import ExitStack
    from pathlib import Path
    from services.trainer.process import open_store

    config = yaml.safe_load(open(sys.argv[1]))
    out = Path(config["output_dir"]) / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.bin").write_bytes(b"w")
    (out / "data_dir.txt").write_text(os.environ.get("ASTRO_DATA_DIR", ""))
    with ExitStack() as stack:
        store = open_store(config["registry_address"], stack)
        store.register(config["output_name"], out, stage="sft", step=1)
    """
)


def test_runs_reach_the_registry_and_trainers_with_the_coordinators_own_token(
    tmp_path: Path,
) -> None:
    """Regression (item 1, in the Runs service): with the token in `auth.token_file`, the
    coordinator checked a run's registered base model without it (StartRun: UNAVAILABLE
    wrapping UNAUTHENTICATED), and a local trainer job started without it could not register
    its checkpoints."""
    from astro_core.models.tiny import TinyModelSpec, build_tiny_model
    from services.coordinator.runs.client import RunsClient
    from services.coordinator.server import register as coordinator_service
    from services.protos.astro.v1 import common_pb2, run_pb2
    from services.runtime.redis_store import connect_redis

    secret = tmp_path / "token"
    secret.write_text("runs-secret\n")
    auth = AuthConfig(token_file=str(secret))
    model = build_tiny_model(tmp_path / "family", TinyModelSpec(family="product"))
    trainer = [sys.executable, "-c", REGISTERING_TRAINER, "{config}"]
    with connect_redis(url=None, directory=tmp_path / "redis") as redis_handle:
        registry_config = ServiceConfig(
            port=0,
            metrics_port=None,
            auth=auth,
            redis_url=redis_handle.url,
            settings={"artifact_root": str(tmp_path / "artifacts")},
        )
        with ServiceThread("registry", registry_service, registry_config) as registry:
            with RegistryClient(registry.client_config(auth=auth)) as client:
                client.register("base", model)
            (tmp_path / "data").mkdir()
            config = ServiceConfig(
                port=0,
                metrics_port=None,
                grace_seconds=1,
                auth=auth,
                data_dir=str(tmp_path / "data"),
                redis_url=redis_handle.url,
                settings={
                    "backends": "tests.runs.fakes:family_backends",
                    "default_preset": "tiny",
                    "poll_seconds": 0.1,
                    "stage_retries": 0,
                    "registry_address": registry.address,
                    "trainer": {"command": trainer},
                },
            )
            with (
                ServiceThread("coordinator", coordinator_service, config) as coordinator,
                RunsClient(coordinator.client_config(auth=auth)) as runs,
            ):
                registered = run_pb2.RunSpec(
                    stages=["search"],
                    base_model=common_pb2.ModelRef(name="base"),
                    problems_path="synth:product?n=2",
                )
                runs.cancel(runs.start(registered).run_id)  # the base model was found
                spec = run_pb2.RunSpec(
                    stages=["search", "clone", "sft"],
                    base_model=common_pb2.ModelRef(path=str(model)),
                    problems_path="synth:product?n=2&seed=5",
                    config_yaml="search: {iterations: 2}\nclone: {preset: cpu}\n",
                )
                rid = runs.start(spec).run_id
                deadline = time.monotonic() + 120
                while (status := runs.get(rid)).state not in ("succeeded", "failed", "cancelled"):
                    assert time.monotonic() < deadline, status
                    time.sleep(0.2)
                assert status.state == "succeeded", status.message
                assert status.stages[2].artifacts["checkpoint"] == f"run-{rid}-sft:1"
    # Regression: local trainers cached their pulls in the user's ~/.astro, shared by every
    # platform on the machine, whatever the coordinator's data dir.
    [noted] = (tmp_path / "data").rglob("data_dir.txt")
    assert noted.read_text() == str(tmp_path / "data")


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _serving(address: str) -> bool:
    from services.health import check_health

    return check_health(ClientConfig(address=address), timeout=1) == "SERVING"


def test_astro_up_restarts_a_killed_service_then_gives_up(tmp_path: Path) -> None:
    config = {
        **BASE_UP,
        "services": ["verifier", "registry"],
        "max_restarts": 1,
        "restart_backoff_seconds": 0.5,
        "overrides": {"verifier": {"settings": {"workers": 1}}},
    }
    with astro_up(tmp_path, config) as (proc, state):
        verifier = state["services"]["verifier"]
        os.kill(verifier["pid"], signal.SIGKILL)
        # Back on the same address, a new process, recorded for clients.
        state_file = tmp_path / "data" / "up.json"

        def restarted() -> dict | None:
            now = json.loads(state_file.read_text())["services"]["verifier"]
            return now if now["pid"] != verifier["pid"] and _serving(now["address"]) else None

        again = _wait_for(restarted, 120, "the verifier to come back")
        assert again["address"] == verifier["address"]
        assert psutil.Process(again["pid"]).ppid() == proc.pid
        # The restart limit (1) is spent: the next death stops the platform with exit 1.
        registry_pid = state["services"]["registry"]["pid"]
        os.kill(again["pid"], signal.SIGKILL)
        assert proc.wait(120) == 1
        assert not psutil.pid_exists(registry_pid) or psutil.Process(registry_pid).status() == (
            psutil.STATUS_ZOMBIE
        )
        events = proc.stderr.read() if proc.stderr else ""
        assert "service verifier exited with code -9; restarting it in 0.5s" in events
        assert "service verifier is back" in events
        assert "after 1 restarts" in events and "stopping the platform" in events
        assert not state_file.exists()


def test_kill_9_of_astro_up_takes_its_services_and_redis_with_it(tmp_path: Path) -> None:
    config = {**BASE_UP, "services": ["verifier", "registry"]}
    with astro_up(tmp_path, config) as (proc, state):
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "redis-server" in names and "serve verifier" in names and "serve registry" in names
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, f"outlived astro up: {[c.cmdline() for c in alive]}"
    # The state it left says nothing is up; the next `astro up` on the folder starts fine.
    assert read_state(tmp_path / "data") is None
    with astro_up(tmp_path, config) as (_, state):
        assert _serving(state["services"]["registry"]["address"])


@pytest.mark.parametrize("ending", ["finishes", "SIGTERM", "SIGKILL"])
def test_in_process_astro_search_leaves_no_redis_server(
    tmp_path: Path, shared_data: Path, tiny_model_dir: Path, ending: str
) -> None:
    """`astro search` without --coordinator runs its own embedded Redis: it must end with the
    command however the command ends. (Orphans would be adopted by this session, the
    subreaper, and show up among its children.)"""
    config = tmp_path / "search.yaml"
    config.write_text("iterations: 2\nmax_solution_tokens: 16\n")
    search = subprocess.Popen(
        [
            sys.executable, "-m", "astro_cli.main", "search",
            "--problems", str(shared_data / "math500.jsonl"), "--limit", "1",
            "--model", str(tiny_model_dir), "--config", str(config),
            "--out", str(tmp_path / "trees.jsonl"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def redis_servers() -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True) if "redis-server" in p.name()]

    try:
        servers = _wait_for(redis_servers, START_TIMEOUT, "the embedded redis-server")
        if ending == "finishes":
            assert search.wait(START_TIMEOUT) == 0, search.stderr.read() if search.stderr else ""
            assert (tmp_path / "trees.jsonl").exists()
        else:
            search.send_signal(getattr(signal, ending))
            search.wait(60)
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"redis-server outlived `astro search` ({ending})"
        assert redis_servers() == []
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
