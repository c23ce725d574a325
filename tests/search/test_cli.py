"""`astro search` end to end: the real generator (tiny model), verifier and coordinator
services on loopback, MATH-500 problems in, schema-valid trees out."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from astro_core.trees import read_trees
from tests.conftest import REPO

NODE_FIELDS = {
    "id", "parent", "depth", "text", "kind", "prior", "visits", "q", "rollout_value",
    "terminal", "answer", "correct",
}  # fmt: skip


def astro(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "astro_cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_trees(out: Path, shared_data: Path, count: int, iterations: int) -> None:
    trees = list(read_trees(out))  # validates the format
    gold = [json.loads(line) for line in (shared_data / "math500.jsonl").open()][:count]
    assert [t.problem_id for t in trees] == [row["unique_id"] for row in gold]
    assert [t.gold for t in trees] == [str(row["answer"]) for row in gold]
    for line, tree in zip(out.read_text().splitlines(), trees, strict=True):
        raw = json.loads(line)
        assert set(raw) == {"problem_id", "problem", "gold", "config", "nodes", "stats"}
        assert all(set(node) == NODE_FIELDS for node in raw["nodes"])
        assert tree.config["iterations"] == iterations
        assert tree.stats["iterations"] == iterations
        root = tree.by_id()["0"]
        assert (root.parent, root.text, root.visits) == (None, "", iterations)
        assert any(n.kind == "rollout" for n in tree.nodes)
        children = tree.children()
        assert all(n.terminal for n in tree.nodes if n.kind == "rollout" and not children[n.id])
        first = [n for n in children["0"] if n.kind == "step"]
        assert abs(sum(n.prior for n in first) - 1) < 1e-6


@pytest.mark.slow
def test_astro_search_on_generator_and_verifier_services(
    tmp_path: Path, shared_data: Path, tiny_model_dir: Path
) -> None:
    """The coordinator reaches the real generator and verifier services over gRPC."""
    from astro_core.protocols import VerifyItem
    from astro_core.search.mcts import SEARCH_REWARDS
    from services.coordinator.server import register as coordinator
    from services.coordinator.settings import CoordinatorSettings
    from services.coordinator.worker import grpc_backends
    from services.generator.server import register as generator
    from services.health import check_health
    from services.runtime.config import ServiceConfig
    from services.runtime.redis_store import connect_redis
    from services.testing import ServiceThread
    from services.verifier.server import register as verifier

    def config(**fields: object) -> ServiceConfig:
        return ServiceConfig(port=0, metrics_port=None, grace_seconds=1, **fields)  # type: ignore[arg-type]

    settings = {"model": {"path": str(tiny_model_dir)}}
    with (
        connect_redis(None, tmp_path / "redis") as redis,
        ServiceThread("generator", generator, config(settings=settings)) as gen,
        ServiceThread("verifier", verifier, config(settings={"workers": 1})) as ver,
    ):
        deadline = time.monotonic() + 120
        while check_health(gen.client_config(), "astro.v1.Generator") != "SERVING":
            assert time.monotonic() < deadline, "generator did not load the tiny model"
            time.sleep(0.1)
        addresses = {"generator_address": gen.address, "verifier_address": ver.address}
        # the coordinator's own clients of both services (the tiny model never writes a
        # \boxed{} answer, so check the verifier path directly too)
        backends = grpc_backends(CoordinatorSettings.model_validate(addresses))
        verdicts = backends.verifier.verify_batch(
            [VerifyItem("so \\boxed{\\frac{1}{2}}", "0.5"), VerifyItem("\\boxed{3}", "4")],
            SEARCH_REWARDS,
        )
        assert [(v.correct, v.reward) for v in verdicts] == [(True, 1.0), (False, 0.0)]
        assert "assistant" in backends.template().render([{"role": "user", "content": "hi"}])
        backends.close()
        coord_config = config(redis_url=redis.url, settings={**addresses, "poll_seconds": 0.1})
        with ServiceThread("coordinator", coordinator, coord_config) as coord:
            out = tmp_path / "trees.jsonl"
            search_config = tmp_path / "search.yaml"
            search_config.write_text("iterations: 2\nmax_solution_tokens: 24\n")
            result = astro(
                "search", "--problems", str(shared_data / "math500.jsonl"), "--limit", "2",
                "--config", str(search_config), "--out", str(out), "--coordinator", coord.address,
            )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 2 trees" in result.stdout
    check_trees(out, shared_data, count=2, iterations=2)


@pytest.mark.slow
def test_astro_search_in_process_writes_schema_valid_trees(
    tmp_path: Path, shared_data: Path, tiny_model_dir: Path
) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("iterations: 3\n")
    out = tmp_path / "trees.jsonl"
    result = astro(
        "search", "--problems", str(shared_data / "math500.jsonl"), "--limit", "3",
        "--model", str(tiny_model_dir), "--preset", "tiny", "--config", str(config),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 3 trees" in result.stdout
    # the progress bar's last frame: problems done of total, nodes, solved share
    assert "searching (" in result.stdout and "3/3" in result.stdout
    check_trees(out, shared_data, count=3, iterations=3)
    # procedure cloning and the graph tools read exactly what search wrote
    from astro_core.cloning import CloningConfig, clone_trees
    from astro_core.cloning.graphs import tree_graph

    trees = list(read_trees(out))
    summary = clone_trees(trees, CloningConfig()).summary
    assert summary["trees"] == 3  # the tiny model never solves: no traces, but no error
    for tree in trees:
        graph = tree_graph(tree)
        assert {n.id for n in graph.nodes} == {n.id for n in tree.nodes}
    drawn = astro("graph", "--tree", f"{out}:2", "--out", str(tmp_path / "tree.dot"), timeout=60)
    assert drawn.returncode == 0, drawn.stderr
    assert trees[1].problem_id in (tmp_path / "tree.dot").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "--preset"),
        (["--limit", "0"], "--limit"),
        (["--config", "BAD"], " k: "),
        (["--problems", "/no/such.jsonl"], "--problems: no file at /no/such.jsonl"),
        (["--problems", "."], "--problems: no file at . (a folder)"),
        (["--problems", "/dev/zero"], "--problems: no file at /dev/zero"),
        (["--problems", "NOT_UTF8"], "--problems: "),
        (["--model", "/nonexistent"], "--model: no model directory at /nonexistent"),
        (["--model", "EMPTY_DIR"], "is not a Hugging Face model (no config.json)"),
        (["--model", "ghost"], "a registered checkpoint needs --coordinator"),
        (["--out", "/nonexistent/dir/o.jsonl"], "--out: folder /nonexistent/dir does not exist"),
        (["--out", "TMP"], "is a folder; name a file in it"),
    ],
)
def test_astro_search_bad_input_fails_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Each bad input: one line on stderr, a non-zero exit, and nothing written or created
    (regressions: tracebacks for a folder or a missing or empty model directory; --out
    created the missing folders)."""
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: 0\n")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "latin1.jsonl").write_bytes(b'{"problem": "caf\xe9?", "answer": "1"}\n')
    places = {"BAD": str(bad), "EMPTY_DIR": str(tmp_path / "emptydir"), "TMP": str(tmp_path),
              "NOT_UTF8": str(tmp_path / "latin1.jsonl")}  # fmt: skip
    out = tmp_path / "t.jsonl"
    full = ["search", "--problems", str(problems), "--out", str(out)]
    args = [places.get(arg, arg) for arg in args]
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name in full:
            full[full.index(name) + 1] = value
        else:
            full += [name, value]
    before = sorted(tmp_path.rglob("*"))
    result = astro(*full, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert sorted(tmp_path.rglob("*")) == before and not Path("/nonexistent").exists()


def coordinator_with(backends: object, redis_url: str) -> object:
    from functools import partial

    from services.coordinator.server import register
    from services.runtime.config import ServiceConfig
    from services.testing import ServiceThread

    config = ServiceConfig(
        port=0,
        metrics_port=None,
        redis_url=redis_url,
        grace_seconds=1,
        settings={"poll_seconds": 0.05, "default_preset": "tiny"},
    )
    return ServiceThread("coordinator", partial(register, backends=backends), config)


def test_astro_search_status_and_cancel(tmp_path: Path) -> None:
    """`astro search status|cancel ID` reach --coordinator, or the one `astro up` recorded."""
    from services.coordinator.client import SearchClient
    from services.coordinator.worker import Backends
    from services.runtime.redis_store import connect_redis
    from tests.search.fakes import (
        TEMPLATE,
        ExactVerifier,
        SlowGenerator,
        endless_policy,
        problem_list,
    )

    # a search that runs until cancelled: every round generates, 0.1 s a call
    slow = SlowGenerator(endless_policy(), 0.1)
    backends = Backends(slow, ExactVerifier(), lambda: TEMPLATE)
    with (
        connect_redis(None, tmp_path / "redis") as redis,
        coordinator_with(backends, redis.url) as svc,  # type: ignore[attr-defined]
        SearchClient(svc.address) as client,
    ):
        long = "iterations: 1000\nmax_depth: 1000\nmax_solution_tokens: 100000"
        running = client.start(problem_list(2), config_yaml=long)
        quick = client.start(problem_list(1), config_yaml="iterations: 1")
        shown = astro("search", "status", running, "--coordinator", svc.address, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert f"search       {running}" in shown.stdout
        assert "state        running" in shown.stdout and "/2 done" in shown.stdout
        # no --coordinator: the address `astro up` recorded in its data directory
        home = tmp_path / "astro-home"
        home.mkdir()
        up = {"pid": 1, "services": {"coordinator": {"address": svc.address}}}
        (home / "up.json").write_text(json.dumps(up))
        env = {"ASTRO_DATA_DIR": str(home)}
        stopped = astro("search", "cancel", running, env=env, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith(f"search {running} cancelled (")
        assert client.status(running).state == "cancelled"
        shown = astro("search", "status", running, env=env, timeout=60)
        assert "state        cancelled" in shown.stdout and "message      cancelled" in shown.stdout
        while client.status(quick).state == "running":
            time.sleep(0.05)
        late = astro("search", "cancel", quick, env=env, timeout=60)
        assert late.returncode == 1
        assert (
            late.stderr.strip() == f"error: search {quick} had already succeeded; nothing to cancel"
        )
        assert client.status(quick).state == "succeeded"
        unknown = astro("search", "status", "nope", env=env, timeout=60)
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == (
            f"error: coordinator at {svc.address}: NOT_FOUND: search_id: no search 'nope'"
        )


def test_astro_search_prints_why_a_search_failed(tmp_path: Path) -> None:
    """Regression: a search whose model the generator cannot load left `astro search`
    waiting silently for minutes; it now ends at once with the coordinator's reason."""
    import grpc

    from services.coordinator.worker import Backends
    from services.runtime.redis_store import connect_redis
    from tests.search.fakes import TEMPLATE, ExactVerifier, RpcFailure, ScriptedGenerator

    def load_model(ref: dict[str, object]) -> None:
        raise RpcFailure(grpc.StatusCode.NOT_FOUND, f"no registered checkpoint {ref['name']}")

    generator = ScriptedGenerator(lambda s: [("a", -1.0)], lambda s: ["\\boxed{1}"])
    backends = Backends(generator, ExactVerifier(), lambda: TEMPLATE, load_model=load_model)
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    out = tmp_path / "t.jsonl"
    with (
        connect_redis(None, tmp_path / "redis") as redis,
        coordinator_with(backends, redis.url) as svc,  # type: ignore[attr-defined]
    ):
        started = time.monotonic()
        result = astro(
            "search", "--problems", str(problems), "--out", str(out), "--model", "ghost",
            "--coordinator", svc.address, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: search ") and last.endswith(
        " ended failed: search setup failed: NOT_FOUND: no registered checkpoint ghost"
    )
    assert time.monotonic() - started < 30 and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_in_process_search_stops_everything_it_started(
    tmp_path: Path, shared_data: Path, tiny_model_dir: Path, sig: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM in the middle of an in-process `astro search`: it cancels, exits 130,
    writes nothing, and every process it started (verifier workers, embedded Redis) ends."""
    import psutil

    config = tmp_path / "search.yaml"
    config.write_text("iterations: 200\nk: 4\nrollouts: 4\n")  # runs far longer than the test
    out = tmp_path / "trees.jsonl"
    command = [
        sys.executable, "-m", "astro_cli.main", "search",
        "--problems", str(shared_data / "math500.jsonl"), "--limit", "2",
        "--model", str(tiny_model_dir), "--config", str(config), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "ASTRO_DATA_DIR": str(tmp_path / "home")}
    search = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in search.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while not any(" started on " in line for line in seen):
            assert time.monotonic() < deadline and search.poll() is None, seen
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        time.sleep(2.0)  # mid-search
        children = psutil.Process(search.pid).children(recursive=True)
        assert children, "the verifier pool's workers should be running"
        search.send_signal(sig)
        assert search.wait(60) == 130
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    reader.join(5)
    while not lines.empty():
        seen.append(lines.get())
    assert seen[-1].startswith("error: interrupted; search "), seen
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
    assert not out.exists()
