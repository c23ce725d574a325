"""Search jobs in Redis: records, per-problem tasks on a stream, progress, idempotent start.

Keys (all under `astro:search:`):

    job:{sid}            hash    state, problems_total, config (JSON), preset, model (JSON),
                                 client_request_id, created_unix, finished_unix, message
    job:{sid}:problems   list    the problems as JSON, in order; task i is problems[i]
    job:{sid}:ids        hash    problem id -> its index (GetTree finds a tree in one read)
    job:{sid}:done       set     indices of finished problems (added once, atomically)
    job:{sid}:counters   hash    problems_done, solved, generator_calls, setup_failures,
                                 nodes (of all its trees, counted by the tree store)
    job:{sid}:finished_by hash   index -> the replica (stream consumer) that finished it
    idem:{request id}    string  the search id a client request id started
    tasks                stream  one entry {sid, index} per problem; consumer group
                                 `coordinators` hands them to replicas
    tree:{sid}:{index}:* the tree (services/coordinator/redis_tree_store.py)

A replica that dies leaves its entries pending; another replica takes them over with
XAUTOCLAIM once they have been idle for `reclaim_idle_seconds`, and continues from the tree
already stored. A live replica keeps its entries fresh with XCLAIM (a heartbeat).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from astro_core.problems import Problem
from astro_core.search.config import SearchConfig
from astro_core.search.store import id_order
from astro_core.trees import SearchTree
from services.coordinator.redis_tree_store import PREFIX, RedisTreeStore
from services.coordinator.streams import WorkQueue

TASKS = PREFIX + "tasks"
GROUP = "coordinators"
FINAL_STATES = ("succeeded", "failed", "cancelled")

# KEYS: done counters job owners; ARGV: index, solved (0/1), now, consumer
_FINISH = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
local done = redis.call('HINCRBY', KEYS[2], 'problems_done', 1)
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'solved', 1) end
local total = tonumber(redis.call('HGET', KEYS[3], 'problems_total'))
if done >= total and redis.call('HGET', KEYS[3], 'state') == 'running' then
  redis.call('HSET', KEYS[3], 'state', 'succeeded', 'finished_unix', ARGV[3])
end
return 1
"""

# KEYS: job; ARGV: state, now, message
_END = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_unix', ARGV[2], 'message', ARGV[3])
return 1
"""


def job_key(sid: str, part: str = "") -> str:
    return f"{PREFIX}job:{sid}" + (f":{part}" if part else "")


def tree_key(sid: str, index: int) -> str:
    return f"{sid}:{index}"


def counter_of_tree(key: str) -> str:
    """The counters hash of the search a tree key (tree_key) belongs to."""
    return job_key(key.rsplit(":", 1)[0], "counters")


def problem_to_json(problem: Problem) -> str:
    return json.dumps(
        {"id": problem.id, "problem": problem.problem, "answer": problem.answer,
         "metadata": problem.metadata}, ensure_ascii=False,
    )  # fmt: skip


def problem_from_json(raw: str) -> Problem:
    data = json.loads(raw)
    return Problem(data["id"], data["problem"], data["answer"], dict(data.get("metadata") or {}))


@dataclass
class JobStatus:
    search_id: str
    state: str
    problems_done: int
    problems_total: int
    nodes: int
    solved_fraction: float
    generator_calls: int
    elapsed_seconds: float
    message: str


@dataclass
class Task:
    entry_id: str
    search_id: str
    index: int


class JobStore:
    """Search jobs and their task stream on one Redis (decode_responses=True)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.trees = RedisTreeStore(client, node_counter=counter_of_tree)
        self._finish = client.register_script(_FINISH)
        self._end = client.register_script(_END)
        self.queue = WorkQueue(client, TASKS, GROUP)

    def ensure_group(self) -> None:
        self.queue.ensure_group()

    # ---- jobs ----------------------------------------------------------------------------

    def create(
        self,
        problems: list[Problem],
        config: SearchConfig,
        preset: str,
        model: dict[str, Any],
        client_request_id: str = "",
    ) -> tuple[str, bool]:
        """Record a job and queue one task per problem. Returns (search id, created now);
        a repeated client_request_id returns the first search's id and queues nothing."""
        sid = uuid.uuid4().hex[:16]
        idem = f"{PREFIX}idem:{client_request_id}" if client_request_id else ""
        self.ensure_group()
        with self.client.pipeline(transaction=True) as pipe:
            if idem:
                # The key and the job are written in one transaction: a failed start leaves
                # no key naming a search that was never recorded (a retry then got NOT_FOUND).
                pipe.watch(idem)
                first = pipe.get(idem)
                if first is not None:
                    return str(first), False
                pipe.multi()
                pipe.set(idem, sid)
            pipe.hset(
                job_key(sid),
                mapping={
                    "search_id": sid,
                    "state": "running",
                    "problems_total": len(problems),
                    "config": config.model_dump_json(),
                    "preset": preset,
                    "model": json.dumps(model),
                    "client_request_id": client_request_id,
                    "created_unix": repr(time.time()),
                    "finished_unix": "",
                    "message": "",
                },
            )
            pipe.rpush(job_key(sid, "problems"), *[problem_to_json(p) for p in problems])
            ids: dict[str, int] = {}
            for index, problem in enumerate(problems):
                ids.setdefault(problem.id, index)  # a repeated id (a run's dataset): the first
            pipe.hset(job_key(sid, "ids"), mapping=ids)  # type: ignore[arg-type]
            pipe.hset(
                job_key(sid, "counters"), mapping={"problems_done": 0, "solved": 0, "nodes": 0}
            )
            for index in range(len(problems)):
                pipe.xadd(TASKS, {"sid": sid, "index": index})
            try:
                pipe.execute()
            except redis.WatchError:  # the same request, at the same time: its search
                return str(self.client.get(idem)), False
        return sid, True

    def exists(self, sid: str) -> bool:
        return bool(self.client.exists(job_key(sid)))

    def record(self, sid: str) -> dict[str, str]:
        return self.client.hgetall(job_key(sid))  # type: ignore[return-value]

    def state(self, sid: str) -> str | None:
        value = self.client.hget(job_key(sid), "state")
        return str(value) if value is not None else None

    def config(self, sid: str) -> SearchConfig:
        return SearchConfig.model_validate_json(self.record(sid)["config"])

    def model(self, sid: str) -> dict[str, Any]:
        """The StartSearch ModelRef as a dict (all fields empty: what the generator serves)."""
        raw = self.client.hget(job_key(sid), "model")
        return dict(json.loads(str(raw))) if raw else {}

    def problems(self, sid: str) -> list[Problem]:
        raw: list[str] = self.client.lrange(job_key(sid, "problems"), 0, -1)  # type: ignore[assignment]
        return [problem_from_json(r) for r in raw]

    def index_of(self, sid: str, problem_id: str) -> int | None:
        """The index of the search's problem `problem_id`, or None."""
        raw = self.client.hget(job_key(sid, "ids"), problem_id)
        if raw is not None:
            return int(str(raw))
        if self.client.exists(job_key(sid, "ids")):
            return None
        # a search recorded before the index existed
        problems = self.problems(sid)
        return next((i for i, p in enumerate(problems) if p.id == problem_id), None)

    def problem(self, sid: str, index: int) -> Problem:
        raw = self.client.lindex(job_key(sid, "problems"), index)
        if raw is None:
            raise KeyError(f"search {sid} has no problem {index}")
        return problem_from_json(str(raw))

    def done_indices(self, sid: str) -> list[int]:
        return sorted(int(i) for i in self.client.smembers(job_key(sid, "done")))  # type: ignore[union-attr]

    def is_done(self, sid: str, index: int) -> bool:
        return bool(self.client.sismember(job_key(sid, "done"), str(index)))

    def count_setup_failure(self, sid: str) -> int:
        """Count one failed setup of the search (over all replicas); returns the count."""
        return int(self.client.hincrby(job_key(sid, "counters"), "setup_failures", 1))  # type: ignore[arg-type]

    def add_generator_calls(self, sid: str, calls: int) -> None:
        if calls:
            self.client.hincrby(job_key(sid, "counters"), "generator_calls", calls)

    def finish_problem(self, sid: str, index: int, solved: bool, consumer: str) -> bool:
        """Mark problem `index` finished; False when it already was (never counted twice)."""
        keys = [job_key(sid, "done"), job_key(sid, "counters"), job_key(sid),
                job_key(sid, "finished_by")]  # fmt: skip
        args: list[str | int] = [index, int(solved), repr(time.time()), consumer]
        return bool(self._finish(keys=keys, args=args))

    def finished_by(self, sid: str) -> dict[int, str]:
        raw: dict[str, str] = self.client.hgetall(job_key(sid, "finished_by"))  # type: ignore[assignment]
        return {int(k): v for k, v in raw.items()}

    def end(self, sid: str, state: str, message: str = "") -> bool:
        """Move a running job to a final state; False when it had already ended."""
        keys = [job_key(sid)]
        return bool(self._end(keys=keys, args=[state, repr(time.time()), message]))

    def tree(self, sid: str, index: int) -> SearchTree | None:
        """The tree of problem `index` as stored now (finished or still growing)."""
        key = tree_key(sid, index)
        header = self.trees.header(key)
        if header is None:
            return None
        nodes = sorted((s.node for s in self.trees.load_nodes(key)), key=lambda n: id_order(n.id))
        return SearchTree(
            problem_id=header.problem_id,
            problem=header.problem,
            gold=header.gold,
            nodes=nodes,
            config=header.config,
            stats=header.stats,
        )

    def status(self, sid: str) -> JobStatus:
        record = self.record(sid)
        counters: dict[str, str] = self.client.hgetall(job_key(sid, "counters"))  # type: ignore[assignment]
        total = int(record["problems_total"])
        if "nodes" in counters:
            nodes = int(counters["nodes"])
        else:  # a search recorded before the count existed: one read per tree
            pipe = self.client.pipeline(transaction=False)
            for index in range(total):
                pipe.hlen(f"{PREFIX}tree:{tree_key(sid, index)}:node")
            nodes = sum(int(n) for n in pipe.execute()) if total else 0
        done = int(counters.get("problems_done", 0))
        solved = int(counters.get("solved", 0))
        created = float(record["created_unix"])
        end = float(record["finished_unix"]) if record.get("finished_unix") else time.time()
        return JobStatus(
            search_id=sid,
            state=record["state"],
            problems_done=done,
            problems_total=total,
            nodes=nodes,
            solved_fraction=solved / done if done else 0.0,
            generator_calls=int(counters.get("generator_calls", 0)),
            elapsed_seconds=max(end - created, 0.0),
            message=record.get("message", ""),
        )

    # ---- tasks ---------------------------------------------------------------------------

    def claim(
        self, consumer: str, count: int, reclaim_idle_ms: int, block_ms: int | None
    ) -> list[Task]:
        """Up to `count` tasks: first ones a dead replica left idle, then new ones
        (waiting up to block_ms for them; None: do not wait)."""
        entries = self.queue.claim(consumer, count, reclaim_idle_ms, block_ms)
        return [Task(entry_id, fields["sid"], int(fields["index"])) for entry_id, fields in entries]

    def owned(self, consumer: str, entry_ids: list[str]) -> set[str]:
        """Which of entry_ids are still pending with this consumer (not taken over)."""
        return self.queue.owned(consumer, entry_ids)

    def heartbeat(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer holds, so no one reclaims them."""
        self.queue.heartbeat(consumer, entry_ids)

    def ack(self, entry_ids: list[str]) -> None:
        """Acknowledge finished tasks and delete them, so the stream does not grow forever."""
        self.queue.ack(entry_ids)
