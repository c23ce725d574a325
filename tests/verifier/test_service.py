"""The Verifier gRPC service on loopback, and its client."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest

from astro_core.protocols import RewardMapping, Verifier, VerifyItem
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ServiceConfig
from services.testing import ServiceThread
from services.verifier.client import VerifierClient
from services.verifier.server import register
from tests.verifier.strict import TWO, strict_verifier


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceThread]:
    settings = {"workers": 2, "timeout_seconds": 20, "max_request_response_chars": 100_000}
    config = ServiceConfig(port=0, metrics_port=0, settings=settings)
    with ServiceThread("verifier", register, config) as svc:
        yield svc


def test_verify_and_batch_order(service: ServiceThread) -> None:
    stub = verifier_pb2_grpc.VerifierStub(sync_channel(service.client_config()))
    one = stub.Verify(verifier_pb2.VerifyRequest(response=r"so $\boxed{\frac12}$", gold="0.5"))
    assert (one.correct, one.reward, one.extracted_answer, one.reason) == (
        True,
        1.0,
        r"\frac12",
        "equal",
    )
    items = [
        verifier_pb2.VerifyRequest(response=rf"\boxed{{{n}}}", gold=str(n if n % 3 else n + 1))
        for n in range(30)
    ]
    items[4].rewards.incorrect = -5.0
    reply = stub.VerifyBatch(
        verifier_pb2.VerifyBatchRequest(
            items=items, rewards=verifier_pb2.RewardMapping(correct=1.0, incorrect=0.0)
        )
    )
    assert [r.extracted_answer for r in reply.results] == [str(n) for n in range(30)]
    assert [r.correct for r in reply.results] == [n % 3 != 0 for n in range(30)]
    assert reply.results[0].reward == 0.0 and reply.results[1].reward == 1.0
    assert reply.results[4].reward == 1.0  # item 4 is correct; its own incorrect is -5
    items[3].rewards.incorrect = -5.0
    again = stub.VerifyBatch(verifier_pb2.VerifyBatchRequest(items=items))
    assert again.results[3].reward == -5.0 and again.results[0].reward == -1.0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (verifier_pb2.VerifyRequest(response=r"\boxed{1}", gold=""), "gold is required"),
        (verifier_pb2.VerifyRequest(response="x" * 200_000, gold="1"), "response is 200000"),
        (verifier_pb2.VerifyRequest(response="1", gold="1" * 20_000), "gold is 20000"),
        (verifier_pb2.VerifyRequest(response="1", gold="1", problem="p" * 200_000), "problem is"),
    ],
)
def test_invalid_requests(
    service: ServiceThread, request_: verifier_pb2.VerifyRequest, message: str
) -> None:
    stub = verifier_pb2_grpc.VerifierStub(sync_channel(service.client_config()))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Verify(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")
    good = verifier_pb2.VerifyRequest(response=r"\boxed{1}", gold="1")
    with pytest.raises(grpc.RpcError) as raised:
        stub.VerifyBatch(verifier_pb2.VerifyBatchRequest(items=[good, request_]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1]" in (raised.value.details() or "")


def test_client_implements_the_protocol_and_metrics(service: ServiceThread) -> None:
    with VerifierClient(service.client_config()) as client:
        assert isinstance(client, Verifier)
        results = client.verify_batch(
            [VerifyItem(r"\boxed{3}", "3"), VerifyItem(r"\boxed{4}", "3")],
            RewardMapping(correct=1.0, incorrect=0.0),
        )
        assert [(r.correct, r.reward) for r in results] == [(True, 1.0), (False, 0.0)]
        assert client.verify(VerifyItem("x = 3", "3")).reward == 1.0
        assert client.verify_batch([]) == []
    registry = service.runtime.metrics.registry
    assert (
        registry.get_sample_value("astro_verifier_items_total", {"outcome": "correct"}) or 0
    ) >= 2
    assert registry.get_sample_value("astro_verifier_timeouts_total") is not None
    assert registry.get_sample_value("astro_verifier_errors_total") is not None
    assert (
        registry.get_sample_value("astro_verifier_batch_seconds_count", {"method": "VerifyBatch"})
        or 0
    ) >= 1


@pytest.fixture(scope="module")
def strict_service() -> Iterator[ServiceThread]:
    """A short item limit and a small per-request budget (20 items at 5 s)."""
    with strict_verifier() as svc:
        yield svc


def test_request_budget_is_bounded(strict_service: ServiceThread) -> None:
    """items x timeout_seconds over max_batch_seconds is RESOURCE_EXHAUSTED, naming it."""
    stub = verifier_pb2_grpc.VerifierStub(sync_channel(strict_service.client_config()))
    with pytest.raises(grpc.RpcError) as raised:
        stub.VerifyBatch(verifier_pb2.VerifyBatchRequest(items=[TWO] * 21))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_batch_seconds 100" in (raised.value.details() or "")
    assert "21 items" in (raised.value.details() or "")
    reply = stub.VerifyBatch(verifier_pb2.VerifyBatchRequest(items=[TWO] * 20))
    assert [r.correct for r in reply.results] == [True] * 20


def test_client_splits_big_batches(strict_service: ServiceThread) -> None:
    """VerifierClient sends a batch as requests of at most batch_items, so a batch over the
    service's budget still works, results in input order."""
    items = [VerifyItem(rf"\boxed{{{n}}}", str(n if n % 4 else n + 1)) for n in range(45)]
    with VerifierClient(strict_service.client_config(), batch_items=20) as client:
        results = client.verify_batch(items)
    assert [r.extracted_answer for r in results] == [str(n) for n in range(45)]
    assert [r.correct for r in results] == [n % 4 != 0 for n in range(45)]
    with pytest.raises(ValueError, match="batch_items"):
        VerifierClient(strict_service.client_config(), batch_items=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_are_invalid(service: ServiceThread, bad: float) -> None:
    stub = verifier_pb2_grpc.VerifierStub(sync_channel(service.client_config()))
    one = verifier_pb2.VerifyRequest(response=r"\boxed{1}", gold="1")
    one.rewards.correct = bad
    with pytest.raises(grpc.RpcError) as raised:
        stub.Verify(one)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rewards.correct" in (raised.value.details() or "")
    batch = verifier_pb2.VerifyBatchRequest(items=[TWO, TWO])
    batch.items[1].rewards.incorrect = bad
    with pytest.raises(grpc.RpcError) as raised:
        stub.VerifyBatch(batch)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1].rewards.incorrect" in (raised.value.details() or "")
    batch = verifier_pb2.VerifyBatchRequest(items=[TWO], rewards={"incorrect": bad})
    with pytest.raises(grpc.RpcError) as raised:
        stub.VerifyBatch(batch)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.Verify(TWO).reward == 1.0  # the service is fine afterwards


def test_settings_where_no_request_fits_are_refused() -> None:
    from services.runtime.config import ConfigError, parse_settings
    from services.verifier.server import VerifierSettings

    with pytest.raises(ConfigError, match="max_batch_seconds"):
        parse_settings(VerifierSettings, {"timeout_seconds": 10, "max_batch_seconds": 5})
    with pytest.raises(ConfigError, match="max_batch_seconds"):
        parse_settings(VerifierSettings, {"max_batch_seconds": "inf"})
    assert parse_settings(VerifierSettings, {"max_batch_seconds": 10}).max_batch_seconds == 10
