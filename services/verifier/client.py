"""A gRPC client of the Verifier service that implements the `Verifier` Protocol."""

from __future__ import annotations

import time
from collections.abc import Sequence

from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig

_DEFAULT_REWARDS = RewardMapping()
# Items per VerifyBatch request: well inside the service's default max_batch_seconds
# (3600 / timeout_seconds 5 = 720 items), and small requests interleave with other clients'.
BATCH_ITEMS = 256


def _request(item: VerifyItem) -> verifier_pb2.VerifyRequest:
    return verifier_pb2.VerifyRequest(response=item.response, gold=item.gold, problem=item.problem)


def _result(message: verifier_pb2.VerifyResult) -> VerifyResult:
    return VerifyResult(message.correct, message.reward, message.extracted_answer, message.reason)


class VerifierClient:
    """`verify_batch` over gRPC; results in input order. Use as a context manager or close().

    timeout_seconds bounds one `verify_batch` or `verify` call as a whole. A batch travels
    as requests of at most `batch_items` items, one after another.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        timeout_seconds: float | None = None,
        batch_items: int = BATCH_ITEMS,
    ) -> None:
        if batch_items < 1:
            raise ValueError(f"batch_items must be at least 1, got {batch_items}")
        self._channel = sync_channel(config, default_timeout=timeout_seconds)
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)
        self._timeout = timeout_seconds
        self._batch_items = batch_items

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = _DEFAULT_REWARDS
    ) -> list[VerifyResult]:
        mapping = verifier_pb2.RewardMapping(correct=rewards.correct, incorrect=rewards.incorrect)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        results: list[VerifyResult] = []
        for start in range(0, len(items), self._batch_items):
            request = verifier_pb2.VerifyBatchRequest(
                items=[_request(i) for i in items[start : start + self._batch_items]],
                rewards=mapping,
            )
            # What is left of the whole call's time (at least a moment, so an expired
            # deadline fails as DEADLINE_EXCEEDED from gRPC, not as a local error).
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            reply = self._stub.VerifyBatch(request, timeout=timeout)
            results.extend(_result(r) for r in reply.results)
        return results

    def verify(self, item: VerifyItem, rewards: RewardMapping = _DEFAULT_REWARDS) -> VerifyResult:
        request = _request(item)
        request.rewards.correct = rewards.correct
        request.rewards.incorrect = rewards.incorrect
        return _result(self._stub.Verify(request))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> VerifierClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
