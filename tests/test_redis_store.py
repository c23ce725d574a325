"""The same round trip against the embedded Redis and the REDIS_URL server."""

from __future__ import annotations

import uuid

from services.runtime.redis_store import RedisHandle


def test_store_round_trip(redis_handle: RedisHandle) -> None:
    r = redis_handle.client
    prefix = f"astro:test:{uuid.uuid4().hex}"
    try:
        r.set(f"{prefix}:k", "v")
        assert r.get(f"{prefix}:k") == "v"
        r.hset(f"{prefix}:h", mapping={"visits": 1, "q": "0.5"})
        r.hincrby(f"{prefix}:h", "visits", 2)
        assert r.hgetall(f"{prefix}:h") == {"visits": "3", "q": "0.5"}
        # Lua runs atomically: the primitive the search uses for backups.
        script = (
            "redis.call('HINCRBY', KEYS[1], 'visits', ARGV[1]);"
            " return redis.call('HGET', KEYS[1], 'visits')"
        )
        assert r.eval(script, 1, f"{prefix}:h", 4) == "7"
        # MULTI/EXEC
        with r.pipeline(transaction=True) as pipe:
            pipe.incr(f"{prefix}:n").incr(f"{prefix}:n")
            assert pipe.execute() == [1, 2]
        # Streams with a consumer group: how work is handed out.
        stream = f"{prefix}:tasks"
        r.xgroup_create(stream, "workers", id="0", mkstream=True)
        r.xadd(stream, {"problem": "p1"})
        got = r.xreadgroup("workers", "w1", {stream: ">"}, count=1)
        [(_, [(entry_id, fields)])] = got
        assert fields == {"problem": "p1"}
        assert r.xack(stream, "workers", entry_id) == 1
        # A second client on the same server sees the same data.
        other = redis_handle.new_client()
        assert other.get(f"{prefix}:k") == "v"
        other.close()
    finally:
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)


def test_embedded_redis_keeps_data_across_restarts(tmp_path) -> None:
    from services.runtime.redis_store import connect_redis

    with connect_redis(directory=tmp_path) as first:
        assert first.embedded
        first.client.set("astro:test:persist", "yes")
    with connect_redis(directory=tmp_path) as second:
        assert second.client.get("astro:test:persist") == "yes"
