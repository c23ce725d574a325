"""RunsClient: the Runs service over gRPC.

    with RunsClient("127.0.0.1:50051") as client:
        status = client.start(spec)                 # a RunSpec (pydantic) or its message
        for event in client.follow(status.run_id):  # events until the run ends, resumed
            print(event.stage, event.state, event.done, event.total)   # after a reconnect
        client.get(status.run_id).state

Failures are grpc.RpcError (INVALID_ARGUMENT naming the field for a bad spec, NOT_FOUND for
an unknown run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.convert import spec_to_proto
from services.protos.astro.v1 import common_pb2, run_pb2
from services.protos.astro.v1.run_pb2_grpc import RunsStub
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig, client_config_from_env

# A run takes as long as it takes; one watch call must not time out first.
WATCH_TIMEOUT_SECONDS = 7 * 24 * 3600.0
RECONNECT_SECONDS = 60.0  # how long follow() keeps trying to reach a restarting coordinator


class RunsClient:
    def __init__(self, target: str | ClientConfig, *, timeout: float = 60.0) -> None:
        config = client_config_from_env(target) if isinstance(target, str) else target
        self._channel = sync_channel(config, default_timeout=timeout)
        self._stub = RunsStub(self._channel)

    def start(
        self, spec: RunSpec | run_pb2.RunSpec, client_request_id: str = ""
    ) -> run_pb2.RunStatus:
        message = spec_to_proto(spec) if isinstance(spec, RunSpec) else spec
        request = run_pb2.StartRunRequest(spec=message, client_request_id=client_request_id)
        return self._stub.StartRun(request)

    def get(self, run_id: str) -> run_pb2.RunStatus:
        return self._stub.GetRun(run_pb2.GetRunRequest(run_id=run_id))

    def list(self, page_size: int = 0, page_token: str = "") -> run_pb2.ListRunsResponse:
        request = run_pb2.ListRunsRequest(page_size=page_size, page_token=page_token)
        return self._stub.ListRuns(request)

    def cancel(self, run_id: str) -> run_pb2.RunStatus:
        return self._stub.CancelRun(run_pb2.GetRunRequest(run_id=run_id))

    def watch(self, run_id: str, after_event_id: str = "") -> Iterator[common_pb2.Progress]:
        """One WatchRun stream: events after `after_event_id` until the run ends."""
        request = run_pb2.WatchRunRequest(run_id=run_id, after_event_id=after_event_id)
        yield from self._stub.WatchRun(request, timeout=WATCH_TIMEOUT_SECONDS)

    def follow(
        self, run_id: str, after_event_id: str = "", reconnect_seconds: float = RECONNECT_SECONDS
    ) -> Iterator[common_pb2.Progress]:
        """Every event until the run ends, across reconnects: a stream that breaks
        (UNAVAILABLE: the coordinator restarted) is opened again after the last event seen,
        so nothing is lost or repeated. Gives up after `reconnect_seconds` without a
        connection."""
        last = after_event_id
        unreachable_since: float | None = None
        while True:
            try:
                for event in self.watch(run_id, last):
                    unreachable_since = None
                    last = event.event_id
                    yield event
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > reconnect_seconds:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RunsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
