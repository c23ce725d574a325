"""TrainProgress events on a Redis stream, for the pipeline run a trainer belongs to.

    astro:run:{run_id}:train    stream; each entry {"progress": TrainProgress as JSON}

JSON (protobuf's mapping, field names as in trainer.proto) so that `redis-cli XRANGE` is
readable and any client can parse it back with `json_format.Parse`. The stream is capped
(MAXLEN ~ 10000). A Redis outage never stops training: the first failure is reported on
stderr, later ones are counted, and events during the outage are lost.
"""

from __future__ import annotations

import sys
from typing import Any

import redis
from google.protobuf import json_format

from astro_core.training.train_log import TrainProgress
from services.protos.astro.v1 import trainer_pb2
from services.registry.messages import to_message

STREAM_MAXLEN = 10_000


def stream_key(run_id: str) -> str:
    return f"astro:run:{run_id}:train"


def to_proto(progress: TrainProgress) -> trainer_pb2.TrainProgress:
    message = trainer_pb2.TrainProgress(
        run_id=progress.run_id,
        stage=progress.stage,
        step=progress.step,
        total_steps=progress.total_steps,
        metrics={k: float(v) for k, v in progress.metrics.items()},
    )
    if progress.checkpoint is not None:
        message.checkpoint.CopyFrom(to_message(progress.checkpoint))
    return message


def read_progress(
    client: redis.Redis, run_id: str, after: str = "-", count: int = 1000
) -> list[tuple[str, trainer_pb2.TrainProgress]]:
    """(entry id, message) of the events after `after` (exclusive unless "-"), oldest first."""
    start = after if after == "-" else f"({after}"
    entries: Any = client.xrange(stream_key(run_id), min=start, count=count)
    result = []
    for entry_id, fields in entries:
        raw = fields.get("progress") or fields.get(b"progress")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        result.append((entry, json_format.Parse(text, trainer_pb2.TrainProgress())))
    return result


class RedisProgressSink:
    """A ProgressSink writing every event to the run's stream."""

    def __init__(self, url: str, run_id: str, *, timeout_seconds: float = 5.0) -> None:
        if not run_id:
            raise ValueError("a Redis progress sink needs a run id")
        self.key = stream_key(run_id)
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.failures = 0
        self.closed = False

    def report(self, progress: TrainProgress) -> None:
        payload = json_format.MessageToJson(
            to_proto(progress), preserving_proto_field_name=True, indent=None
        )
        try:
            self.client.xadd(
                self.key, {"progress": payload}, maxlen=STREAM_MAXLEN, approximate=True
            )
        except redis.RedisError as exc:
            self.failures += 1
            if self.failures == 1:
                sys.stderr.write(f"warning: progress to Redis failed ({exc}); training goes on\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.failures > 1:
            sys.stderr.write(f"warning: {self.failures} progress events did not reach Redis\n")
        self.client.close()
