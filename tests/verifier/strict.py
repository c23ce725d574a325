"""A Verifier service with a short item limit and a small per-request budget, and the requests
tests send it: one that never finishes in time and one that is quick. Used by
tests/verifier/test_service.py and the cancel test in tests/test_reliability.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from services.verifier.server import register

ITEM_SECONDS = 5  # timeout_seconds: one item's limit
STRICT_SETTINGS = {"workers": 2, "timeout_seconds": ITEM_SECONDS, "max_batch_seconds": 100}

STUCK = verifier_pb2.VerifyRequest(response=r"\boxed{(10^{8})!}", gold=r"(10^{8})! + 1")
TWO = verifier_pb2.VerifyRequest(response=r"\boxed{2}", gold="2")


@contextmanager
def strict_verifier() -> Iterator[ServiceThread]:
    """The service on loopback: 2 workers, 5 s an item, 100 s a request (20 items)."""
    config = ServiceConfig(port=0, metrics_port=0, settings=STRICT_SETTINGS)
    with ServiceThread("verifier", register, config) as service:
        yield service


def next_small_call_seconds(stub: verifier_pb2_grpc.VerifierStub) -> float:
    """How long a one-item call takes to answer (it waits for a free worker)."""
    started = time.monotonic()
    reply = stub.Verify(TWO, timeout=60)
    assert reply.correct
    return time.monotonic() - started
