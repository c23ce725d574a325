"""The Verifier service against many clients at once: a request takes its turn in the worker
pool as soon as it arrives, and the number of requests in progress is bounded."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from services.verifier.server import register
from tests.verifier.strict import STUCK, TWO


def test_a_small_request_is_not_kept_waiting_by_the_shared_executor() -> None:
    """Regression: each request waited for its verdicts in a thread of the event loop's
    shared executor (min(32, cores + 4) threads). Once that many requests were in progress,
    the next ones were not even queued in the pool: a one-item Verify waited for whole
    batches to finish instead of taking its turn. Here the loop's executor has one thread,
    as on a busy machine with few cores; two batches of four stuck items (1 s each) run."""
    settings = {
        "workers": 1,
        "timeout_seconds": 1,
        "max_batch_seconds": 100,
        "max_concurrent_requests": 3,
    }
    config = ServiceConfig(port=0, metrics_port=0, settings=settings)
    with ServiceThread("verifier", register, config) as service:

        async def one_shared_thread() -> None:
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))

        service.run(one_shared_thread())
        stub = verifier_pb2_grpc.VerifierStub(sync_channel(service.client_config(retry_attempts=1)))
        batch = verifier_pb2.VerifyBatchRequest(items=[STUCK] * 4)  # chunks of one item
        busy = [stub.VerifyBatch.future(batch, timeout=60) for _ in range(2)]
        time.sleep(0.5)  # both are in progress
        began = time.monotonic()
        assert stub.Verify(TWO, timeout=30).correct
        took = time.monotonic() - began
        # The fourth request in progress is over max_concurrent_requests (3).
        third = stub.VerifyBatch.future(batch, timeout=60)
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Verify(TWO, timeout=30)
        for call in [*busy, third]:
            call.cancel()
    # One stuck item of each batch at most before it (about 2 s), not both batches (8 s).
    assert took < 5, f"a one-item Verify waited {took:.1f} s behind two batches"
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 requests in progress" in (raised.value.details() or "")
