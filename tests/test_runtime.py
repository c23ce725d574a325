"""The shared service runtime: health, reflection, auth, metrics, graceful stop, clients, TLS."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from services.health import check_health
from services.protos.astro.v1 import verifier_pb2, verifier_pb2_grpc
from services.runtime.client import retry_unavailable, sync_channel
from services.runtime.config import AuthConfig, ClientConfig, ServiceConfig, TLSConfig
from services.runtime.server import ServiceRuntime, ServiceStartError
from services.testing import ServiceThread
from tests.conftest import free_port


class EchoVerifier(verifier_pb2_grpc.VerifierServicer):
    """Test servicer: equal strings are correct; `problem` holds seconds to sleep first."""

    async def Verify(self, request, context):  # noqa: N802 - gRPC method name
        await asyncio.sleep(float(request.problem or 0))
        if not request.gold:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "gold is required")
        if request.gold == "echo":  # a message that quotes what the caller sent
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"response {request.response} is refused"
            )
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


# -- auth before everything, INTERNAL for the unexpected, one way to reach a peer ----------


def _raw_call(config: ClientConfig, method: str, streaming: bool = False) -> grpc.RpcError:
    """Call `method` with an empty request; return the error it ends with."""
    channel = sync_channel(config.model_copy(update={"retry_attempts": 1}))
    try:
        if streaming:
            call = channel.stream_stream(method)
            with pytest.raises(grpc.RpcError) as err:
                list(call(iter([b""]), timeout=5))
        else:
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(b"", timeout=5)
        return err.value
    finally:
        channel.close()


def test_with_auth_unknown_methods_and_reflection_answer_unauthenticated() -> None:
    config = ServiceConfig(port=0, metrics_port=0, auth=AuthConfig(token="s3cret"))
    with ServiceThread("echo", register_echo, config) as svc:
        no_token, token = svc.client_config(), svc.client_config(auth=AuthConfig(token="s3cret"))
        for streaming in (False, True):
            for method in ("/astro.v1.Verifier/Nope", "/no.such.Service/Call"):
                err = _raw_call(no_token, method, streaming)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (method, err.details())
                err = _raw_call(svc.client_config(auth=AuthConfig(token="x")), method, streaming)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                assert _raw_call(token, method, streaming).code() == grpc.StatusCode.UNIMPLEMENTED
        reflection_method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        err = _raw_call(no_token, reflection_method, streaming=True)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        channel = sync_channel(token)
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(reflect.ServerReflectionInfo(iter([request])))
        assert "astro.v1.Verifier" in {s.name for s in reply.list_services_response.service}
        channel.close()
        assert check_health(no_token) == "SERVING"  # probes carry no token
        # Probed names do not become metric labels; they are counted as one.
        port = svc.runtime.metrics_port
        assert port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"/no.such.Service/Call" not in body and b'method="<unknown>"' in body


def test_metrics_are_only_on_their_own_port() -> None:
    """/metrics needs no token, so it is served apart from gRPC (which it is not)."""
    config = ServiceConfig(port=0, metrics_port=0, auth=AuthConfig(token="s3cret"))
    with ServiceThread("echo", register_echo, config) as svc:
        assert svc.runtime.metrics_port and svc.runtime.metrics_port != svc.runtime.port
        assert _metric(svc.runtime.metrics_port, "astro_grpc_in_flight") == 0
        with pytest.raises((OSError, HTTPException)):  # gRPC's port: HTTP/2 only, no metrics
            urllib.request.urlopen(f"http://127.0.0.1:{svc.runtime.port}/metrics", timeout=5)
    disabled = ServiceConfig(port=0, metrics_port=None)
    with ServiceThread("echo", register_echo, disabled) as svc:
        assert svc.runtime.metrics_port is None


def register_failing(runtime: ServiceRuntime) -> Sequence[str]:
    """Test service whose handlers raise what they should have turned into a status:
    /test.Failing/Unary and /test.Failing/Stream (raw bytes, no messages)."""

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise KeyError("no such thing")

    async def stream(request: bytes, context: grpc.aio.ServicerContext):
        yield b"first"
        raise ZeroDivisionError("mid-stream")

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    assert runtime.server is not None
    runtime.server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Failing", handlers)]
    )
    return ["test.Failing"]


def test_an_unexpected_exception_is_internal_with_a_message() -> None:
    with ServiceThread("failing", register_failing) as svc:
        channel = sync_channel(svc.client_config(retry_attempts=1))
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/test.Failing/Unary")(b"")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == "KeyError: 'no such thing'"
        stream = channel.unary_stream("/test.Failing/Stream")(b"")
        assert next(stream) == b"first"
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == "ZeroDivisionError: mid-stream"
        channel.close()
    with ServiceThread("echo", register_echo) as svc:  # a status the handler chose is kept
        with pytest.raises(grpc.RpcError) as err:
            verify(svc.client_config(), gold="")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def register_counting(runtime: ServiceRuntime) -> Sequence[str]:
    """Test service with a client-streaming method of VerifyRequest messages:
    /test.Counting/Count answers how many it read (as the `response` of a VerifyRequest)."""

    async def count(requests, context: grpc.aio.ServicerContext) -> verifier_pb2.VerifyRequest:
        seen = 0
        async for _ in requests:
            seen += 1
        return verifier_pb2.VerifyRequest(response=str(seen))

    handler = grpc.stream_unary_rpc_method_handler(
        count,
        request_deserializer=verifier_pb2.VerifyRequest.FromString,
        response_serializer=verifier_pb2.VerifyRequest.SerializeToString,
    )
    assert runtime.server is not None
    runtime.server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Counting", {"Count": handler})]
    )
    return ["test.Counting"]


# Bytes that are not a VerifyRequest: a truncated field, and invalid UTF-8 in a string field.
UNDECODABLE = [b"\x0a\x05ab", b"\x0a\x01\xff"]


@pytest.mark.parametrize("data", UNDECODABLE)
def test_request_bytes_that_are_not_the_message_are_invalid_argument(data: bytes) -> None:
    with ServiceThread("echo", register_echo) as svc:
        channel = sync_channel(svc.client_config(retry_attempts=1))
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/astro.v1.Verifier/Verify")(data, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid /astro.v1.Verifier/Verify message" in (err.value.details() or "")
        channel.close()
        assert verify(svc.client_config()).correct  # and it goes on serving
    with ServiceThread("counting", register_counting) as svc:
        channel = sync_channel(svc.client_config(retry_attempts=1))
        count = channel.stream_unary("/test.Counting/Count")
        good = verifier_pb2.VerifyRequest(gold="1").SerializeToString()
        reply = verifier_pb2.VerifyRequest.FromString(count(iter([good, good]), timeout=10))
        assert reply.response == "2"
        with pytest.raises(grpc.RpcError) as err:  # one bad message in a stream
            count(iter([good, data, good]), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid /test.Counting/Count message" in (err.value.details() or "")
        channel.close()


@pytest.mark.parametrize("char", ["x", "名"])
def test_a_long_status_message_is_clipped_not_lost(char: str) -> None:
    """A message quoting 100 kB of input is over a client's metadata limit (16 KiB): unclipped,
    the caller got RESOURCE_EXHAUSTED "Stream removed" instead of the status. A character
    outside ASCII takes up to 9 bytes once percent-encoded."""
    from services.runtime.interceptors import MAX_DETAILS_WIRE_BYTES

    with ServiceThread("echo", register_echo) as svc:
        with pytest.raises(grpc.RpcError) as err:
            verify(svc.client_config(), response=char * 100_000, gold="echo")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    full = len("response ") + 100_000 + len(" is refused")
    assert details.startswith(f"response {char * 10}")
    assert details.endswith(f"[{full} characters in all]")
    assert MAX_DETAILS_WIRE_BYTES / 10 < len(details.encode()) <= MAX_DETAILS_WIRE_BYTES


def test_a_peer_is_reached_with_the_services_own_credentials(tmp_path: Path) -> None:
    """ServiceConfig.client_config carries the token (from token_file) and the TLS settings."""
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    secret = tmp_path / "token"
    secret.write_text("mounted-secret\n")
    own = ServiceConfig(
        host="localhost",
        port=0,
        metrics_port=None,
        auth=AuthConfig(token_file=str(secret)),
        tls=TLSConfig(enabled=True, cert_file=str(cert), key_file=str(key), ca_file=str(cert)),
        max_message_bytes=4096,
    )
    with ServiceThread("echo", register_echo, own) as peer:
        config = own.client_config(peer.address, timeout_seconds=7)
        assert (config.timeout_seconds, config.max_message_bytes) == (7, 4096)
        assert verify(config).correct
        with pytest.raises(grpc.RpcError) as err:  # the same, minus the token
            verify(config.model_copy(update={"auth": AuthConfig()}))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_busy_port_fails_the_start_and_undoes_it() -> None:
    stopped: list[str] = []

    def register_tracked(runtime: ServiceRuntime) -> Sequence[str]:
        runtime.on_shutdown(lambda: stopped.append("cleaned"))
        return register_echo(runtime)

    with ServiceThread("echo", register_echo) as first:
        for busy in ({"port": first.runtime.port}, {"metrics_port": first.runtime.metrics_port}):
            config = ServiceConfig(**{"port": 0, "metrics_port": 0, **busy})
            with pytest.raises(ServiceStartError, match="cannot (listen|serve metrics) on"):
                ServiceThread("echo", register_tracked, config).start()
        assert verify(first.client_config()).correct  # the one holding the port is unharmed

    def register_then_fail(runtime: ServiceRuntime) -> Sequence[str]:
        runtime.on_shutdown(lambda: stopped.append("cleaned"))
        raise RuntimeError("a setting was wrong")

    with pytest.raises(RuntimeError, match="a setting was wrong"):
        ServiceThread("echo", register_then_fail).start()
    assert stopped == ["cleaned"]  # what register had started was stopped


def test_a_config_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="prot"):
        ServiceConfig.model_validate({"prot": 50051})
    with pytest.raises(ValidationError, match="tokn"):
        ServiceConfig.model_validate({"auth": {"tokn": "x"}})
    with pytest.raises(ValidationError, match="metrics_port must differ from port"):
        ServiceConfig(port=50053, metrics_port=50053)
