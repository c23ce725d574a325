"""Registry metadata in Redis, under one key prefix (default `astro:reg:`).

Keys (P = prefix):
  P model:NAME            hash  next_version (the per-name counter; never reused)
  P ckpt:NAME:VERSION     hash  record (JSON metadata), seq
  P versions:NAME         zset  VERSION scored by version (listing one name)
  P index                 zset  NAME:VERSION scored by a global sequence (listing all, newest first)
  P aliases:NAME          hash  alias -> version
  P events                stream  registered / alias / deleted, in commit order

Every write is one Lua script, so a version number, its record, its aliases and its event
appear together or not at all, and concurrent registrations never share a version. (The
scripts build their keys from the prefix: fine for one Redis server, not for Redis Cluster.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from astro_core.checkpoints import CheckpointInUse, CheckpointNotFound

_ALIASES_OF = """
local function aliases_of(key, version)
  local flat = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #flat, 2 do
    if flat[i + 1] == tostring(version) then out[#out + 1] = flat[i] end
  end
  table.sort(out)
  return table.concat(out, ',')
end
"""

# ARGV: prefix, name, record, maxlen, alias...
_REGISTER = """
local p, name, record, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local version = redis.call('HINCRBY', p .. 'model:' .. name, 'next_version', 1)
local seq = redis.call('INCR', p .. 'seq')
redis.call('HSET', p .. 'ckpt:' .. name .. ':' .. version, 'record', record, 'seq', seq)
redis.call('ZADD', p .. 'versions:' .. name, version, version)
redis.call('ZADD', p .. 'index', seq, name .. ':' .. version)
local aliases = {}
for i = 5, #ARGV do
  redis.call('HSET', p .. 'aliases:' .. name, ARGV[i], version)
  aliases[#aliases + 1] = ARGV[i]
end
table.sort(aliases)
local csv = table.concat(aliases, ',')
local events = p .. 'events'
redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'kind', 'registered', 'name', name,
  'version', version, 'alias', '', 'record', record, 'aliases', csv)
for i = 5, #ARGV do
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'kind', 'alias', 'name', name,
    'version', version, 'alias', ARGV[i], 'record', record, 'aliases', csv)
end
return version
"""

# ARGV: prefix, name, version ("0" = by alias), alias
_GET = (
    _ALIASES_OF
    + """
local p, name, version, alias = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', p .. 'model:' .. name) == 0 then return {'no_model'} end
if version == '0' then
  version = redis.call('HGET', p .. 'aliases:' .. name, alias)
  if not version then return {'no_alias'} end
end
local record = redis.call('HGET', p .. 'ckpt:' .. name .. ':' .. version, 'record')
if not record then return {'no_version'} end
return {'ok', version, record, aliases_of(p .. 'aliases:' .. name, version)}
"""
)

# ARGV: prefix, name, version, alias, maxlen
_SET_ALIAS = (
    _ALIASES_OF
    + """
local p, name, version, alias, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', p .. 'model:' .. name) == 0 then return {'no_model'} end
local record = redis.call('HGET', p .. 'ckpt:' .. name .. ':' .. version, 'record')
if not record then return {'no_version'} end
local key = p .. 'aliases:' .. name
if redis.call('HGET', key, alias) ~= version then
  redis.call('HSET', key, alias, version)
  redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'kind', 'alias', 'name', name,
    'version', version, 'alias', alias, 'record', record, 'aliases', aliases_of(key, version))
end
return {'ok', version, record, aliases_of(key, version)}
"""
)

# ARGV: prefix, name, version, maxlen
_DELETE = (
    _ALIASES_OF
    + """
local p, name, version, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', p .. 'model:' .. name) == 0 then return {'no_model'} end
local ckpt = p .. 'ckpt:' .. name .. ':' .. version
local record = redis.call('HGET', ckpt, 'record')
if not record then return {'no_version'} end
local used = aliases_of(p .. 'aliases:' .. name, version)
if used ~= '' then return {'in_use', used} end
redis.call('DEL', ckpt)
redis.call('ZREM', p .. 'versions:' .. name, version)
redis.call('ZREM', p .. 'index', name .. ':' .. version)
redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'kind', 'deleted', 'name', name,
  'version', version, 'alias', '', 'record', record, 'aliases', '')
return {'ok', version, record, ''}
"""
)

# Stream ids are two unsigned 64-bit numbers ("ms-seq"); ASCII digits only ("１" is a digit
# to str.isdigit, not to Redis).
_EVENT_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
# NAME:STAGE:SCORE, the filters of the listing it continues (names and stages hold no ':'):
# the scores of one listing mean nothing in another (versions of one name, or a global
# sequence), so a token from elsewhere is refused rather than silently paging wrong.
_PAGE_TOKEN = re.compile(r"([A-Za-z0-9._-]*):([a-z]*):([0-9]{1,20})")
# Versions one page looks at, at most: under a stage filter that matches few, a page is
# short (even empty, with a token to go on) instead of scanning the whole index at once.
MAX_SCANNED = 10_000
_SCAN_BATCH = 200  # versions read at a time under a stage filter
_UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Entry:
    """One stored version: its name, number, record (JSON metadata) and current aliases."""

    name: str
    version: int
    record: dict[str, Any]
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    event_id: str
    kind: str
    alias: str
    entry: Entry


def check_event_id(event_id: str) -> str:
    """Return event_id ("" allowed), or raise ValueError unless Redis would accept it."""
    if not event_id:
        return event_id
    match = _EVENT_ID.fullmatch(event_id)
    if not match or any(int(part) > _UINT64_MAX for part in match.groups() if part):
        raise ValueError(f"after_event_id {event_id!r} is not an event id (e.g. '1700000000000-0')")
    return event_id


def event_key(event_id: str) -> tuple[int, int]:
    """A valid event id as (ms, seq), for ordering; "5" is "5-0", as XREAD reads it."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _split(csv: str) -> tuple[str, ...]:
    return tuple(csv.split(",")) if csv else ()


class RedisMetadata:
    """The registry's metadata operations, each atomic in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str, events_maxlen: int) -> None:
        self.client = client
        self.prefix = prefix
        self.events_key = f"{prefix}events"
        self.maxlen = events_maxlen
        self._register = client.register_script(_REGISTER)
        self._get = client.register_script(_GET)
        self._set_alias = client.register_script(_SET_ALIAS)
        self._delete = client.register_script(_DELETE)

    def _entry(self, name: str, reply: Sequence[str], wanted: str) -> Entry:
        status = reply[0]
        if status == "no_model":
            raise CheckpointNotFound(f"no model named {name!r}")
        if status == "no_alias":
            raise CheckpointNotFound(f"{name} has no alias {wanted!r}")
        if status == "no_version":
            raise CheckpointNotFound(f"{name} has no version {wanted}")
        if status == "in_use":
            raise CheckpointInUse(
                f"{name}:{wanted} is in use by alias(es) {reply[1].replace(',', ', ')}; "
                "move them first"
            )
        _, version, record, aliases = reply
        return Entry(name, int(version), json.loads(record), _split(aliases))

    async def register(self, name: str, record: Mapping[str, Any], aliases: Sequence[str]) -> Entry:
        """Commit a new version; `latest` and `aliases` move to it."""
        args: list[str | int] = [self.prefix, name, json.dumps(record), self.maxlen, "latest"]
        args += aliases
        version = int(await self._register(args=args))
        return Entry(name, version, dict(record), tuple(sorted({"latest", *aliases})))

    async def get(self, name: str, version: int = 0, alias: str = "latest") -> Entry:
        reply = await self._get(args=[self.prefix, name, version, alias])
        return self._entry(name, reply, str(version) if version else alias)

    async def set_alias(self, name: str, version: int, alias: str) -> Entry:
        reply = await self._set_alias(args=[self.prefix, name, version, alias, self.maxlen])
        return self._entry(name, reply, str(version))

    async def delete(self, name: str, version: int) -> Entry:
        reply = await self._delete(args=[self.prefix, name, version, self.maxlen])
        return self._entry(name, reply, str(version))

    async def list_page(
        self, name: str, stage: str, page_size: int, page_token: str, max_bytes: int
    ) -> tuple[list[Entry], str]:
        """A page, newest first, and the token of the next page ("" after the last). A page
        ends early once its records take max_bytes (it always holds one), or after
        MAX_SCANNED versions were looked at."""
        upper = "+inf"
        if page_token:
            match = _PAGE_TOKEN.fullmatch(page_token)
            if not match or match.group(1, 2) != (name, stage):
                raise ValueError(
                    f"page_token {page_token!r} did not come from ListCheckpoints with this "
                    f"name ({name!r}) and stage ({stage!r})"
                )
            upper = f"({match.group(3)}"
        key = f"{self.prefix}versions:{name}" if name else f"{self.prefix}index"
        batch_size = max(page_size, _SCAN_BATCH) if stage else page_size
        found: list[tuple[str, int, dict[str, Any]]] = []
        last_score, size, scanned, more = "", 0, 0, False
        while not more:
            batch: list[Any] = await self.client.zrevrangebyscore(
                key, upper, "-inf", start=0, num=batch_size, withscores=True
            )
            refs = [(name, int(m)) if name else _parse_member(m) for m, _ in batch]
            pipe = self.client.pipeline(transaction=False)
            for model, version in refs:
                pipe.hget(f"{self.prefix}ckpt:{model}:{version}", "record")
            raws: list[Any] = await pipe.execute()
            for (model, version), raw, (_, score) in zip(refs, raws, batch, strict=True):
                if raw is not None:  # else deleted since the index was read
                    record = json.loads(raw)
                    if not stage or record["stage"] == stage:
                        if found and size + len(raw) > max_bytes:
                            more = True  # this one starts the next page
                            break
                        found.append((model, version, record))
                        size += len(raw)
                last_score = str(int(score))
                scanned += 1
                if len(found) == page_size or scanned == MAX_SCANNED:
                    more = True
                    break
            if len(batch) < batch_size:
                break  # the index is exhausted
            upper = f"({last_score}"
        aliases = await self._aliases_by_name({model for model, _, _ in found})
        entries = [
            Entry(model, version, record, aliases[model].get(version, ()))
            for model, version, record in found
        ]
        return entries, f"{name}:{stage}:{last_score}" if more else ""

    async def _aliases_by_name(self, names: set[str]) -> dict[str, dict[int, tuple[str, ...]]]:
        pipe = self.client.pipeline(transaction=False)
        ordered = sorted(names)
        for model in ordered:
            pipe.hgetall(f"{self.prefix}aliases:{model}")
        out: dict[str, dict[int, tuple[str, ...]]] = {}
        tables: list[dict[str, str]] = await pipe.execute()
        for model, table in zip(ordered, tables, strict=True):
            by_version: dict[int, list[str]] = {}
            for alias, version in sorted(table.items()):
                by_version.setdefault(int(version), []).append(alias)
            out[model] = {v: tuple(a) for v, a in by_version.items()}
        return out

    async def check_available(self) -> None:
        """Raise redis.ConnectionError (or TimeoutError) unless Redis answers."""
        await self.client.ping()

    async def last_event_id(self) -> str:
        newest: Any = await self.client.xrevrange(self.events_key, "+", "-", count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def read_events(self, after: str, block_ms: int, count: int = 100) -> list[Event]:
        """Events after `after` in commit order, waiting up to block_ms for the first."""
        reply: Any = await self.client.xread({self.events_key: after}, count=count, block=block_ms)
        events = []
        for _, entries in reply or []:
            for event_id, fields in entries:
                entry = Entry(
                    fields["name"],
                    int(fields["version"]),
                    json.loads(fields["record"]),
                    _split(fields["aliases"]),
                )
                events.append(Event(event_id, fields["kind"], fields["alias"], entry))
        return events


def _parse_member(member: str) -> tuple[str, int]:
    model, _, version = member.rpartition(":")
    return model, int(version)
