"""Work handed to coordinator replicas through a Redis Stream and its consumer group.

Search tasks (services/coordinator/jobs.py) and runs (services/coordinator/runs/store.py)
are both entries of a stream that replicas read with XREADGROUP. An entry stays pending with
the replica that read it until acknowledged; a live replica keeps its entries fresh with
XCLAIM (a heartbeat), and entries idle for longer than a reclaim time (their replica died)
are taken over by another with XAUTOCLAIM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

Entry = tuple[str, dict[str, str]]  # (entry id, fields)


class WorkQueue:
    """One stream and its consumer group on a Redis client with decode_responses=True."""

    def __init__(self, client: redis.Redis, stream: str, group: str) -> None:
        self.client = client
        self.stream = stream
        self.group = group

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim(
        self, consumer: str, count: int, reclaim_idle_ms: int, block_ms: int | None
    ) -> list[Entry]:
        """Up to `count` entries: first ones a dead replica left idle for reclaim_idle_ms,
        then new ones (waiting up to block_ms for them; None: do not wait)."""
        if count <= 0:
            return []
        self.ensure_group()
        entries: list[Entry] = []
        reply = self.client.xautoclaim(
            self.stream,
            self.group,
            consumer,
            min_idle_time=reclaim_idle_ms,
            start_id="0-0",
            count=count,
        )
        stale = reply[1]  # type: ignore[index]  # Redis 7 adds a third item, deleted ids
        self.ack([entry_id for entry_id, fields in stale if not fields])  # deleted (Redis 6)
        entries += [(entry_id, fields) for entry_id, fields in stale if fields]
        if len(entries) < count:
            fresh: Any = self.client.xreadgroup(
                self.group,
                consumer,
                {self.stream: ">"},
                count=count - len(entries),
                block=block_ms if not entries else None,
            )
            for _stream, items in fresh or []:
                entries += [(entry_id, fields) for entry_id, fields in items]
        return entries

    def owned(self, consumer: str, entry_ids: Sequence[str]) -> set[str]:
        """Which of entry_ids are still pending with this consumer (not taken over)."""
        if not entry_ids:
            return set()
        pending = self.client.xpending_range(
            self.stream,
            self.group,
            min="-",
            max="+",
            count=max(len(entry_ids) * 2, 100),
            consumername=consumer,
        )
        held = {str(p["message_id"]) for p in pending}
        return held & set(entry_ids)

    def heartbeat(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer holds, so no one reclaims them."""
        if entry_ids:
            ids: list[Any] = list(entry_ids)
            self.client.xclaim(
                self.stream, self.group, consumer, min_idle_time=0, message_ids=ids, justid=True
            )

    def ack(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge finished entries and delete them, so the stream does not grow forever."""
        if entry_ids:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.stream, self.group, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            pipe.execute()
