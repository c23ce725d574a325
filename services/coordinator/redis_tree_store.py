"""TreeStore on Redis: every node written as it is created, backups applied atomically.

Per tree (key K), under `astro:search:tree:K:`:

    meta   hash   problem_id, problem, gold, config (JSON), stats (JSON)
    node   hash   node id -> the node's fixed fields as JSON (text, prior, answer, ..., tokens)
    n      hash   node id -> visits          (changed only by the backup script)
    q      hash   node id -> Q               (changed only by the backup script)
    rv     hash   node id -> rollout value
    kids   hash   node id -> comma-separated ids of its step children

A round's `commit` (its new nodes, then the backup of each path) is one Lua script, so it
runs atomically in Redis: its nodes and backups land together or not at all, and
concurrent backups through the same node never lose a visit or a value. Given the root
visits the round was planned on, the script first checks them: a worker that stalled while
another took its tree over writes nothing (TreeConflict) instead of overwriting the other's
nodes with its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import redis

from astro_core.search.store import StoredNode, TreeConflict, TreeHeader
from astro_core.trees import TreeNode

PREFIX = "astro:search:"

# KEYS: meta node n q rv [counter]; ARGV: the header's 5 fields, then the root's (id, json,
# visits, q, rv)
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'problem_id', ARGV[1], 'problem', ARGV[2], 'gold', ARGV[3],
           'config', ARGV[4], 'stats', ARGV[5])
for i = 2, 5 do redis.call('HSET', KEYS[i], ARGV[6], ARGV[5 + i]) end
if KEYS[6] then redis.call('HINCRBY', KEYS[6], 'nodes', 1) end
return 1
"""

# KEYS: node n q rv kids [counter]; ARGV: the root visits the round expects ('': any), the
# number of nodes, the nodes (id, parent or '', kind, json, visits, q, rv each), then each
# path as its length and its ids, root first. Checks, adds the nodes, then backs up each
# path leaf to root: N += 1, Q from the children. Returns (id, visits, q) of the paths' nodes.
_COMMIT = """
if ARGV[1] ~= '' then
  local have = redis.call('HGET', KEYS[2], '0') or ''
  if have ~= ARGV[1] then
    return redis.error_reply('CONFLICT the root has ' .. have .. ' visits, the round expected '
                             .. ARGV[1])
  end
end
local count, added = tonumber(ARGV[2]), 0
local i = 3
for _ = 1, count do
  local id, parent, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  added = added + redis.call('HSET', KEYS[1], id, ARGV[i + 3])  -- 0: rewritten (a fresh root)
  redis.call('HSET', KEYS[2], id, ARGV[i + 4])
  redis.call('HSET', KEYS[3], id, ARGV[i + 5])
  redis.call('HSET', KEYS[4], id, ARGV[i + 6])
  if parent ~= '' and kind == 'step' then
    local kids = redis.call('HGET', KEYS[5], parent)
    if not kids then
      redis.call('HSET', KEYS[5], parent, id)
    else
      local known = false
      for kid in string.gmatch(kids, '[^,]+') do
        if kid == id then known = true end
      end
      if not known then redis.call('HSET', KEYS[5], parent, kids .. ',' .. id) end
    end
  end
  i = i + 7
end
if KEYS[6] and added > 0 then redis.call('HINCRBY', KEYS[6], 'nodes', added) end
local out = {}
while i <= #ARGV do
  local last = i + tonumber(ARGV[i])
  for j = last, i + 1, -1 do
    local id = ARGV[j]
    local visits = redis.call('HINCRBY', KEYS[2], id, 1)
    local weighted, total = 0, 0
    local kids = redis.call('HGET', KEYS[5], id)
    if kids then
      for kid in string.gmatch(kids, '[^,]+') do
        local n = tonumber(redis.call('HGET', KEYS[2], kid) or '0')
        local q = tonumber(redis.call('HGET', KEYS[3], kid) or '0')
        weighted = weighted + q * n
        total = total + n
      end
    end
    local rv = tonumber(redis.call('HGET', KEYS[4], id) or '0')
    local q = string.format('%.17g', (weighted + rv) / (total + 1))
    redis.call('HSET', KEYS[3], id, q)
    out[#out + 1] = id
    out[#out + 1] = visits
    out[#out + 1] = q
  end
  i = last + 1
end
return out
"""

_FIXED = ("id", "parent", "depth", "text", "kind", "prior", "terminal", "answer", "correct")


def _node_args(stored: StoredNode) -> list[Any]:
    """One node as the scripts take it: id, parent or '', kind, fixed fields, visits, q, rv."""
    node = stored.node
    fixed = {name: getattr(node, name) for name in _FIXED}
    fixed["tokens"] = stored.tokens
    return [
        node.id,
        node.parent or "",
        node.kind,
        json.dumps(fixed, ensure_ascii=False),
        node.visits,
        repr(float(node.q)),
        repr(float(node.rollout_value)),
    ]


class RedisTreeStore:
    """The TreeStore Protocol on Redis (client must use decode_responses=True)."""

    def __init__(
        self, client: redis.Redis, node_counter: Callable[[str], str] | None = None
    ) -> None:
        self.client = client
        # node_counter(tree key): a hash whose field `nodes` counts the tree's nodes with
        # those of other trees (a search's), kept with the nodes so a count costs one read.
        self.node_counter = node_counter
        self._create = client.register_script(_CREATE)
        self._commit = client.register_script(_COMMIT)

    @staticmethod
    def _key(key: str, part: str) -> str:
        return f"{PREFIX}tree:{key}:{part}"

    def keys_of(self, key: str) -> list[str]:
        return [self._key(key, p) for p in ("meta", "node", "n", "q", "rv", "kids")]

    def create_tree(self, key: str, header: TreeHeader, root: StoredNode) -> bool:
        node_id, _, _, fixed, visits, q, rv = _node_args(root)
        args = [
            header.problem_id,
            header.problem,
            header.gold,
            json.dumps(header.config),
            json.dumps(header.stats),
            node_id,
            fixed,
            visits,
            q,
            rv,
        ]
        keys = [self._key(key, p) for p in ("meta", "node", "n", "q", "rv")]
        if self.node_counter is not None:
            keys.append(self.node_counter(key))
        return bool(self._create(keys=keys, args=args))

    def header(self, key: str) -> TreeHeader | None:
        meta: dict[str, str] = self.client.hgetall(self._key(key, "meta"))  # type: ignore[assignment]
        if not meta:
            return None
        return TreeHeader(
            problem_id=meta["problem_id"],
            problem=meta["problem"],
            gold=meta["gold"],
            config=json.loads(meta.get("config") or "{}"),
            stats=json.loads(meta.get("stats") or "{}"),
        )

    def add_nodes(self, key: str, nodes: Sequence[StoredNode]) -> None:
        self.commit(key, nodes, [])

    def backup(self, key: str, path: Sequence[str]) -> dict[str, tuple[int, float]]:
        return self.commit(key, [], [path])

    def commit(
        self,
        key: str,
        nodes: Sequence[StoredNode],
        paths: Sequence[Sequence[str]],
        root_visits: int | None = None,
    ) -> dict[str, tuple[int, float]]:
        if not nodes and not paths:
            return {}
        args: list[Any] = ["" if root_visits is None else root_visits, len(nodes)]
        args += [arg for stored in nodes for arg in _node_args(stored)]
        for path in paths:
            args += [len(path), *path]
        keys = [self._key(key, p) for p in ("node", "n", "q", "rv", "kids")]
        if self.node_counter is not None:
            keys.append(self.node_counter(key))
        try:
            flat = self._commit(keys=keys, args=args)
        except redis.ResponseError as exc:
            if str(exc).startswith("CONFLICT "):
                raise TreeConflict(f"tree {key}: {str(exc).removeprefix('CONFLICT ')}") from None
            raise
        return {
            str(flat[i]): (int(flat[i + 1]), float(flat[i + 2])) for i in range(0, len(flat), 3)
        }

    def load_nodes(self, key: str) -> list[StoredNode]:
        pipe = self.client.pipeline(transaction=True)
        for part in ("node", "n", "q", "rv"):
            pipe.hgetall(self._key(key, part))
        fixed_all, visits, qs, rvs = pipe.execute()
        nodes = []
        for node_id, raw in fixed_all.items():
            fixed = json.loads(raw)
            tokens = int(fixed.pop("tokens", 0))
            node = TreeNode(
                **fixed,
                visits=int(visits.get(node_id, 0)),
                q=float(qs.get(node_id, 0.0)),
                rollout_value=float(rvs.get(node_id, 0.0)),
            )
            nodes.append(StoredNode(node, tokens))
        nodes.sort(key=lambda s: (s.node.depth, s.node.id))
        return nodes

    def node_count(self, key: str) -> int:
        return int(self.client.hlen(self._key(key, "node")))  # type: ignore[arg-type]

    def set_stats(self, key: str, stats: dict[str, Any]) -> None:
        self.client.hset(self._key(key, "meta"), "stats", json.dumps(stats))

    def delete(self, key: str) -> None:
        self.client.delete(*self.keys_of(key))
