"""The shared service runtime: health, reflection, auth, metrics, graceful stop, clients, TLS."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.health import check_health
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import retry_unavailable, sync_channel
from services.runtime.config import AuthConfig, ClientConfig, ServiceConfig, TLSConfig
from services.runtime.server import ServiceRuntime
from services.testing import ServiceThread
from tests.conftest import free_port


class EchoVerifier(verifier_pb2_grpc.VerifierServicer):
    """Test servicer: equal strings are correct; `problem` holds seconds to sleep first."""

    async def Verify(self, request, context):  # noqa: N802 - gRPC method name
        await asyncio.sleep(float(request.problem or 0))
        if not request.gold:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "gold is required")
        correct = request.response == request.gold
        return verifier_pb2.VerifyResult(correct=correct, reward=1.0 if correct else -1.0)


def register_echo(runtime: ServiceRuntime) -> Sequence[str]:
    verifier_pb2_grpc.add_VerifierServicer_to_server(EchoVerifier(), runtime.server)
    return ["astro.v1.Verifier"]


def verify(config: ClientConfig, response: str = "1", gold: str = "1", sleep: float = 0.0, **kw):
    channel = sync_channel(config)
    try:
        stub = verifier_pb2_grpc.VerifierStub(channel)
        return stub.Verify(
            verifier_pb2.VerifyRequest(response=response, gold=gold, problem=str(sleep)), **kw
        )
    finally:
        channel.close()


def test_health_and_reflection() -> None:
    with ServiceThread("echo", register_echo) as svc:
        channel = sync_channel(svc.client_config())
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "astro.v1.Verifier"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
        listed = {s.name for s in reply.list_services_response.service}
        assert {"astro.v1.Verifier", "grpc.health.v1.Health"} <= listed
        channel.close()


def test_auth_rejects_missing_and_wrong_tokens() -> None:
    config = ServiceConfig(port=0, metrics_port=None, auth=AuthConfig(token="s3cret"))
    with ServiceThread("echo", register_echo, config) as svc:
        for auth in (AuthConfig(), AuthConfig(token="wrong")):
            with pytest.raises(grpc.RpcError) as err:
                verify(svc.client_config(auth=auth))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert verify(svc.client_config(auth=AuthConfig(token="s3cret"))).correct
        # Probes carry no token; health stays open.
        assert check_health(svc.client_config()) == "SERVING"


def test_auth_token_from_mounted_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-secret\n")
    config = ServiceConfig(port=0, metrics_port=None, auth=AuthConfig(token_file=str(secret)))
    with ServiceThread("echo", register_echo, config) as svc:
        assert verify(svc.client_config(auth=AuthConfig(token_file=str(secret)))).correct
        with pytest.raises(grpc.RpcError) as err:
            verify(svc.client_config())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _metric(port: int, line_start: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(line_start):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_after_calls() -> None:
    with ServiceThread("echo", register_echo) as svc:
        port = svc.runtime.metrics_port
        assert port
        ok = (
            'astro_grpc_requests_total{code="OK",method="/astro.v1.Verifier/Verify",service="echo"}'
        )
        bad = (
            'astro_grpc_errors_total{code="INVALID_ARGUMENT",'
            'method="/astro.v1.Verifier/Verify",service="echo"}'
        )
        before_ok, before_bad = _metric(port, ok), _metric(port, bad)
        for _ in range(3):
            verify(svc.client_config())
        with pytest.raises(grpc.RpcError):
            verify(svc.client_config(), gold="")
        assert _metric(port, ok) == before_ok + 3
        assert _metric(port, bad) == before_bad + 1
        count = (
            'astro_grpc_request_seconds_count{method="/astro.v1.Verifier/Verify",service="echo"}'
        )
        assert _metric(port, count) == 4


def test_graceful_stop_finishes_in_flight_and_refuses_new() -> None:
    config = ServiceConfig(port=0, metrics_port=None, grace_seconds=5)
    svc = ServiceThread("echo", register_echo, config).start()
    results: list[object] = []
    slow = threading.Thread(target=lambda: results.append(verify(svc.client_config(), sleep=1.0)))
    slow.start()
    time.sleep(0.3)  # the slow call is in flight
    stopper = threading.Thread(target=svc.stop)
    stopper.start()
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as err:
        verify(svc.client_config(retry_attempts=1), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    slow.join(10)
    stopper.join(10)
    assert len(results) == 1 and results[0].correct


def test_client_retries_until_the_server_comes_up() -> None:
    port = free_port()
    config = ServiceConfig(port=port, metrics_port=None)
    client = ClientConfig(address=f"127.0.0.1:{port}", timeout_seconds=10)
    svc = ServiceThread("echo", register_echo, config)
    timer = threading.Timer(0.5, svc.start)
    timer.start()
    try:
        # Channel retries are immediate-failure based; retry_unavailable covers a down server.
        result = retry_unavailable(lambda: verify(client), attempts=8, initial_backoff=0.3)
        assert result.correct
    finally:
        timer.join()
        svc.stop()


def test_retry_unavailable_gives_up_and_passes_other_errors() -> None:
    calls = []

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    def always_down():
        calls.append(1)
        raise Unavailable()

    with pytest.raises(grpc.RpcError):
        retry_unavailable(always_down, attempts=3, sleep=lambda s: None)
    assert len(calls) == 3


def test_message_size_limit() -> None:
    config = ServiceConfig(port=0, metrics_port=None, max_message_bytes=1024)
    with ServiceThread("echo", register_echo, config) as svc:
        with pytest.raises(grpc.RpcError) as err:
            verify(svc.client_config(), response="x" * 4096)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert verify(svc.client_config()).correct


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    tls = TLSConfig(enabled=True, cert_file=str(cert), key_file=str(key), ca_file=str(cert))
    config = ServiceConfig(host="localhost", port=0, metrics_port=None, tls=tls)
    with ServiceThread("echo", register_echo, config) as svc:
        assert verify(svc.client_config(tls=tls)).correct
        # A plaintext client cannot talk to a TLS server.
        with pytest.raises(grpc.RpcError):
            verify(svc.client_config(retry_attempts=1), timeout=2)


def test_a_held_service_reports_not_serving_until_released() -> None:
    def register_held(runtime: ServiceRuntime) -> Sequence[str]:
        runtime.hold_serving("astro.v1.Verifier")
        return register_echo(runtime)

    with ServiceThread("echo", register_held) as svc:
        assert check_health(svc.client_config()) == "SERVING"  # the process is up
        assert check_health(svc.client_config(), "astro.v1.Verifier") == "NOT_SERVING"
        svc.run(svc.runtime.set_serving("astro.v1.Verifier", True))
        assert check_health(svc.client_config(), "astro.v1.Verifier") == "SERVING"


def test_cancelled_calls_are_counted_as_cancelled() -> None:
    with ServiceThread("echo", register_echo) as svc:
        port = svc.runtime.metrics_port
        assert port
        with pytest.raises(grpc.RpcError) as err:
            verify(svc.client_config(retry_attempts=1), sleep=3.0, timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        line = (
            'astro_grpc_requests_total{code="CANCELLED",'
            'method="/astro.v1.Verifier/Verify",service="echo"}'
        )
        deadline = time.monotonic() + 10
        while _metric(port, line) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metric(port, line) == 1
