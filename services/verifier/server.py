"""Verifier: answer extraction and equivalence in a pool of worker processes.

Settings (ServiceConfig.settings, `VerifierSettings`): the pool's `VerifierConfig` fields
(`workers`, `timeout_seconds`, `fallback`, ...) plus the request limits
`max_request_response_chars`, `max_batch_items`, `max_batch_seconds` and
`max_concurrent_requests`.

A request whose client gave up (cancelled, or past its deadline) stops: its queued items are
dropped and a worker busy with one of them is replaced (`VerifierPool.check_batch(cancel=)`).
Each request in progress waits for its verdicts in a thread of the service's own (not the
event loop's shared executor, whose few threads would make the next requests wait for whole
batches to finish instead of taking turns in the pool).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from pydantic import ConfigDict, Field, model_validator

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
    max_batch_seconds: float = Field(
        3600.0,
        gt=0,
        allow_inf_nan=False,
        description="Most worst-case work one request may ask for, in worker-seconds: its "
        "items x timeout_seconds. A larger request is RESOURCE_EXHAUSTED (split it).",
    )
    max_concurrent_requests: int = Field(
        256,
        gt=0,
        le=4096,
        description="Most requests in progress at once (each waits in a thread); one more is "
        "RESOURCE_EXHAUSTED.",
    )

    @model_validator(mode="after")
    def _one_item_fits(self) -> VerifierSettings:
        if self.max_batch_seconds < self.timeout_seconds:
            raise ValueError(
                f"max_batch_seconds ({self.max_batch_seconds:g}) is below timeout_seconds "
                f"({self.timeout_seconds:g}): no request would fit"
            )
        return self


class InvalidRequest(ValueError):
    """A request the service refuses; the message names what is wrong."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class OverBudget(InvalidRequest):
    """A request asking for more work than `max_batch_seconds` allows."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


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
        self.cancelled = Counter(
            "astro_verifier_cancelled",
            "Requests whose client gave up (cancel or deadline); their work was dropped.",
            registry=registry,
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


def _rewards(
    message: verifier_pb2.RewardMapping, default: RewardMapping, where: str
) -> RewardMapping:
    """The request's rewards over `default`; NaN and infinities are refused."""
    values = {}
    for name in ("correct", "incorrect"):
        value = getattr(message, name) if message.HasField(name) else getattr(default, name)
        if not math.isfinite(value):
            raise InvalidRequest(f"{where}rewards.{name} is {value}; rewards must be finite")
        values[name] = value
    return RewardMapping(**values)


class VerifierServicer(verifier_pb2_grpc.VerifierServicer):
    def __init__(
        self, pool: VerifierPool, metrics: VerifierMetrics, settings: VerifierSettings
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_response = settings.max_request_response_chars
        self.max_items = settings.max_batch_items
        self.max_seconds = settings.max_batch_seconds
        self.max_requests = settings.max_concurrent_requests
        self.in_flight = 0  # requests in _run (only the event loop changes it)
        self._threads = ThreadPoolExecutor(self.max_requests, thread_name_prefix="verify-request")

    def close(self) -> None:
        """After the pool closed (which ends every request it held)."""
        self._threads.shutdown(wait=True)

    def _item(self, request: verifier_pb2.VerifyRequest, index: int | None) -> VerifyItem:
        where = "" if index is None else f"items[{index}]: "
        if not request.gold.strip():
            raise InvalidRequest(f"{where}gold is required")
        if len(request.gold) > self.pool.config.max_gold_chars:
            raise InvalidRequest(
                f"{where}gold is {len(request.gold)} chars, over {self.pool.config.max_gold_chars}"
            )
        for name in ("response", "problem"):
            size = len(getattr(request, name))
            if size > self.max_response:
                raise InvalidRequest(
                    f"{where}{name} is {size} chars, over max_request_response_chars "
                    f"{self.max_response}"
                )
        return VerifyItem(request.response, request.gold, request.problem)

    def _check_budget(self, count: int) -> None:
        if self.in_flight >= self.max_requests:
            raise OverBudget(
                f"{self.in_flight} requests in progress, the most max_concurrent_requests "
                "allows; retry later"
            )
        seconds = count * self.pool.config.timeout_seconds
        if seconds > self.max_seconds:
            raise OverBudget(
                f"{count} items x timeout_seconds {self.pool.config.timeout_seconds:g} = "
                f"{seconds:g} s, over max_batch_seconds {self.max_seconds:g}; split the batch"
            )

    async def _run(
        self, method: str, items: list[VerifyItem], rewards: list[RewardMapping]
    ) -> list[verifier_pb2.VerifyResult]:
        started = time.perf_counter()
        cancel = threading.Event()
        check = partial(self.pool.check_batch, items, cancel=cancel)
        self.in_flight += 1
        try:
            verdicts = await asyncio.get_running_loop().run_in_executor(self._threads, check)
        except asyncio.CancelledError:  # the client cancelled or its deadline passed
            cancel.set()
            self.metrics.cancelled.inc()
            raise
        finally:
            self.in_flight -= 1
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
            rewards = _rewards(request.rewards, RewardMapping(), "")
            self._check_budget(1)
        except InvalidRequest as exc:
            await context.abort(exc.code, str(exc))
        return (await self._run("Verify", [item], [rewards]))[0]

    async def VerifyBatch(
        self, request: verifier_pb2.VerifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.VerifyBatchResponse:
        try:
            if len(request.items) > self.max_items:
                raise InvalidRequest(
                    f"{len(request.items)} items, over max_batch_items {self.max_items}"
                )
            items = [self._item(r, i) for i, r in enumerate(request.items)]
            default = _rewards(request.rewards, RewardMapping(), "")
            rewards = [
                _rewards(r.rewards, default, f"items[{i}].") if r.HasField("rewards") else default
                for i, r in enumerate(request.items)
            ]
            self._check_budget(len(items))
        except InvalidRequest as exc:
            await context.abort(exc.code, str(exc))
        results = await self._run("VerifyBatch", items, rewards)
        return verifier_pb2.VerifyBatchResponse(results=results)


def register(runtime: ServiceRuntime) -> Sequence[str]:
    assert runtime.server is not None
    settings = parse_settings(VerifierSettings, runtime.config.settings)
    pool = VerifierPool(settings)  # a VerifierConfig; workers ignore the service's limits
    servicer = VerifierServicer(pool, VerifierMetrics(runtime.metrics.registry), settings)
    runtime.on_shutdown(servicer.close)  # runs after pool.close (callbacks run in reverse)
    runtime.on_shutdown(pool.close)
    verifier_pb2_grpc.add_VerifierServicer_to_server(servicer, runtime.server)
    return [verifier_pb2.DESCRIPTOR.services_by_name["Verifier"].full_name]
