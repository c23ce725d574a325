"""Verifier: answer extraction and equivalence in a pool of worker processes.

Settings (ServiceConfig.settings, `VerifierSettings`): the pool's `VerifierConfig` fields
(`workers`, `timeout_seconds`, `fallback`, ...) plus the request limits
`max_request_response_chars` and `max_batch_items`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from pydantic import ConfigDict, Field

from astro_core.answers import Verdict, VerifierConfig, VerifierPool
from astro_core.protocols import RewardMapping, VerifyItem
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.config import parse_settings
from services.runtime.server import ServiceRuntime


class VerifierSettings(VerifierConfig):
    """The verifier's section of ServiceConfig.settings: the pool's settings plus limits."""

    model_config = ConfigDict(extra="forbid")

    max_request_response_chars: int = Field(
        4_000_000, gt=0, description="A longer response is refused with INVALID_ARGUMENT."
    )
    max_batch_items: int = Field(10_000, gt=0, description="Most items in one VerifyBatch.")


class InvalidRequest(ValueError):
    """A request the service refuses; the message names what is wrong."""


class VerifierMetrics:
    def __init__(self, registry: Any) -> None:
        self.item_seconds = Histogram(
            "astro_verifier_batch_seconds",
            "Time to verify one Verify/VerifyBatch request, in seconds.",
            ["method"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.items = Counter(
            "astro_verifier_items", "Items verified, by outcome.", ["outcome"], registry=registry
        )
        self.timeouts = Counter(
            "astro_verifier_timeouts", "Items whose check hit the time limit.", registry=registry
        )
        self.errors = Counter(
            "astro_verifier_errors", "Items whose check failed with an error.", registry=registry
        )

    def record(self, method: str, seconds: float, verdicts: Sequence[Verdict]) -> None:
        self.item_seconds.labels(method).observe(seconds)
        for verdict in verdicts:
            if verdict.reason == "timeout":
                self.timeouts.inc()
                outcome = "timeout"
            elif verdict.reason.startswith("error"):
                self.errors.inc()
                outcome = "error"
            else:
                outcome = "correct" if verdict.correct else "incorrect"
            self.items.labels(outcome).inc()


def _rewards(message: verifier_pb2.RewardMapping, default: RewardMapping) -> RewardMapping:
    return RewardMapping(
        correct=message.correct if message.HasField("correct") else default.correct,
        incorrect=message.incorrect if message.HasField("incorrect") else default.incorrect,
    )


class VerifierServicer(verifier_pb2_grpc.VerifierServicer):
    def __init__(
        self, pool: VerifierPool, metrics: VerifierMetrics, settings: VerifierSettings
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_response = settings.max_request_response_chars
        self.max_items = settings.max_batch_items

    def _item(self, request: verifier_pb2.VerifyRequest, index: int | None) -> VerifyItem:
        where = "" if index is None else f"items[{index}]: "
        if not request.gold.strip():
            raise InvalidRequest(f"{where}gold is required")
        if len(request.gold) > self.pool.config.max_gold_chars:
            raise InvalidRequest(
                f"{where}gold is {len(request.gold)} chars, over {self.pool.config.max_gold_chars}"
            )
        if len(request.response) > self.max_response:
            raise InvalidRequest(
                f"{where}response is {len(request.response)} chars, over {self.max_response}"
            )
        return VerifyItem(request.response, request.gold, request.problem)

    async def _run(
        self, method: str, items: list[VerifyItem], rewards: list[RewardMapping]
    ) -> list[verifier_pb2.VerifyResult]:
        started = time.perf_counter()
        verdicts = await asyncio.to_thread(self.pool.check_batch, items)
        self.metrics.record(method, time.perf_counter() - started, verdicts)
        return [
            verifier_pb2.VerifyResult(
                correct=v.correct,
                reward=r.correct if v.correct else r.incorrect,
                extracted_answer=v.extracted,
                reason=v.reason,
            )
            for v, r in zip(verdicts, rewards, strict=True)
        ]

    async def Verify(
        self, request: verifier_pb2.VerifyRequest, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.VerifyResult:
        try:
            item = self._item(request, None)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        rewards = _rewards(request.rewards, RewardMapping())
        return (await self._run("Verify", [item], [rewards]))[0]

    async def VerifyBatch(
        self, request: verifier_pb2.VerifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.VerifyBatchResponse:
        try:
            if len(request.items) > self.max_items:
                raise InvalidRequest(f"{len(request.items)} items, over {self.max_items}")
            items = [self._item(r, i) for i, r in enumerate(request.items)]
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        default = _rewards(request.rewards, RewardMapping())
        rewards = [
            _rewards(r.rewards, default) if r.HasField("rewards") else default
            for r in request.items
        ]
        results = await self._run("VerifyBatch", items, rewards)
        return verifier_pb2.VerifyBatchResponse(results=results)


def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    settings = parse_settings(VerifierSettings, runtime.config.settings)
    pool = VerifierPool(settings)  # a VerifierConfig; workers ignore the service's limits
    runtime.on_shutdown(pool.close)
    servicer = VerifierServicer(pool, VerifierMetrics(runtime.metrics.registry), settings)
    verifier_pb2_grpc.add_VerifierServicer_to_server(servicer, runtime.server)
    return [verifier_pb2.DESCRIPTOR.services_by_name["Verifier"].full_name]
