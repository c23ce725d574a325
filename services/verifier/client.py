"""A gRPC client of the Verifier service that implements the `Verifier` Protocol."""

from __future__ import annotations

from collections.abc import Sequence

from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig

_DEFAULT_REWARDS = RewardMapping()


def _request(item: VerifyItem) -> verifier_pb2.VerifyRequest:
    return verifier_pb2.VerifyRequest(response=item.response, gold=item.gold, problem=item.problem)


def _result(message: verifier_pb2.VerifyResult) -> VerifyResult:
    return VerifyResult(message.correct, message.reward, message.extracted_answer, message.reason)


class VerifierClient:
    """`verify_batch` over gRPC; results in input order. Use as a context manager or close()."""

    def __init__(self, config: ClientConfig, *, timeout_seconds: float | None = None) -> None:
        self._channel = sync_channel(config, default_timeout=timeout_seconds)
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)

    def verify_batch(
        self, items: Sequence[VerifyItem], rewards: RewardMapping = _DEFAULT_REWARDS
    ) -> list[VerifyResult]:
        if not items:
            return []
        request = verifier_pb2.VerifyBatchRequest(
            items=[_request(i) for i in items],
            rewards=verifier_pb2.RewardMapping(
                correct=rewards.correct, incorrect=rewards.incorrect
            ),
        )
        return [_result(r) for r in self._stub.VerifyBatch(request).results]

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
