"""The reference server in-process, driven by the generated stubs and plain grpcio."""

from __future__ import annotations

import logging
import os
import queue
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from qr_sampler.proto import entropy_service_pb2_grpc as pb2_grpc
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest
from qr_sampler.server import (
    HARD_MAX_BYTES,
    SERVICE_NAME,
    EntropyServer,
    EntropyServerError,
    ServerConfig,
)
from tests.sampler.entropy.grpc_test_support import API_KEY, FakeClock

TIMEOUT = 5.0


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EntropyServer]:
    """A running server; parametrize indirectly with ServerConfig options."""
    options = getattr(request, "param", {})
    clock = options.pop("clock", time.monotonic)
    with EntropyServer(ServerConfig(address="127.0.0.1:0", **options), clock=clock) as running:
        yield running


@pytest.fixture
def stub(server: EntropyServer) -> Iterator[pb2_grpc.EntropyServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb2_grpc.EntropyServiceStub(channel)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return,attr-defined]


def test_get_entropy_returns_exact_bytes_echo_and_provenance(
        server: EntropyServer, stub: pb2_grpc.EntropyServiceStub) -> None:
    before = time.time_ns()
    reply = stub.GetEntropy(EntropyRequest(bytes_needed=20_480, sequence_id=42), timeout=TIMEOUT)
    assert len(reply.data) == 20_480
    assert reply.sequence_id == 42
    assert before <= reply.generation_timestamp_ns <= time.time_ns()
    assert reply.device_id == "urandom"
    assert server.requests_served == 1
    assert server.stats.summary()["bytes_served"] == 20_480


def test_stream_entropy_answers_each_request_in_order(
        server: EntropyServer, stub: pb2_grpc.EntropyServiceStub) -> None:
    requests = [EntropyRequest(bytes_needed=n, sequence_id=s)
                for n, s in ((10, 7), (2000, 8), (1, 1_000_000_000_000))]
    replies = list(stub.StreamEntropy(iter(requests), timeout=TIMEOUT))
    assert [(len(r.data), r.sequence_id) for r in replies] == [
        (10, 7), (2000, 8), (1, 1_000_000_000_000)]
    assert server.requests_served == 3


def test_a_stream_stays_open_between_requests(stub: pb2_grpc.EntropyServiceStub) -> None:
    feed: queue.SimpleQueue[EntropyRequest | None] = queue.SimpleQueue()
    replies = stub.StreamEntropy(iter(feed.get, None), timeout=TIMEOUT)
    for seq in range(1, 4):
        feed.put(EntropyRequest(bytes_needed=16, sequence_id=seq))
        assert next(replies).sequence_id == seq
    feed.put(None)
    assert list(replies) == []


def test_health_and_reflection(server: EntropyServer) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert SERVICE_NAME == "qr_entropy.EntropyService"
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(services)
        described = database.FindFileContainingSymbol(SERVICE_NAME)
        assert described.package == "qr_entropy"


@pytest.mark.parametrize("server", [{"api_key": API_KEY}], indirect=True)
def test_api_key_missing_wrong_right(stub: pb2_grpc.EntropyServiceStub,
                                     server: EntropyServer) -> None:
    request = EntropyRequest(bytes_needed=8)
    assert _code(lambda: stub.GetEntropy(request, timeout=TIMEOUT)) == (
        grpc.StatusCode.UNAUTHENTICATED)
    assert _code(lambda: stub.GetEntropy(request, timeout=TIMEOUT,
                                         metadata=(("api-key", "nope"),))) == (
        grpc.StatusCode.PERMISSION_DENIED)
    assert _code(lambda: list(stub.StreamEntropy(iter([request]), timeout=TIMEOUT))) == (
        grpc.StatusCode.UNAUTHENTICATED)
    good = (("api-key", API_KEY),)
    assert len(stub.GetEntropy(request, timeout=TIMEOUT, metadata=good).data) == 8
    assert len(list(stub.StreamEntropy(iter([request]), timeout=TIMEOUT, metadata=good))) == 1
    assert server.stats.summary()["rejected"] == {"UNAUTHENTICATED": 2, "PERMISSION_DENIED": 1}


@pytest.mark.parametrize("server", [{"api_key": API_KEY, "api_key_header": "x-token"}],
                         indirect=True)
def test_api_key_header_is_configurable(stub: pb2_grpc.EntropyServiceStub) -> None:
    request = EntropyRequest(bytes_needed=8)
    assert _code(lambda: stub.GetEntropy(request, timeout=TIMEOUT,
                                         metadata=(("api-key", API_KEY),))) == (
        grpc.StatusCode.UNAUTHENTICATED)
    assert stub.GetEntropy(request, timeout=TIMEOUT, metadata=(("x-token", API_KEY),)).data


@pytest.mark.parametrize("server", [{"max_bytes_per_request": 13_312}], indirect=True)
def test_per_request_cap(stub: pb2_grpc.EntropyServiceStub) -> None:
    assert len(stub.GetEntropy(EntropyRequest(bytes_needed=13_312), timeout=TIMEOUT).data) == (
        13_312)
    for n in (13_313, 0, -5):
        assert _code(lambda n=n: stub.GetEntropy(EntropyRequest(bytes_needed=n),
                                                 timeout=TIMEOUT)) == (
            grpc.StatusCode.INVALID_ARGUMENT)


def test_hard_cap_without_configured_cap(stub: pb2_grpc.EntropyServiceStub) -> None:
    assert _code(lambda: stub.GetEntropy(EntropyRequest(bytes_needed=HARD_MAX_BYTES + 1),
                                         timeout=TIMEOUT)) == grpc.StatusCode.INVALID_ARGUMENT


CLOCK = FakeClock()


@pytest.mark.parametrize("server", [{"rate_limit_per_min": 3, "clock": CLOCK}], indirect=True)
def test_rate_limit_counts_calls_and_stream_messages(stub: pb2_grpc.EntropyServiceStub) -> None:
    request = EntropyRequest(bytes_needed=1)
    stub.GetEntropy(request, timeout=TIMEOUT)
    assert len(list(stub.StreamEntropy(iter([request, request]), timeout=TIMEOUT))) == 2
    assert _code(lambda: stub.GetEntropy(request, timeout=TIMEOUT)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED)
    CLOCK.advance(60)
    assert stub.GetEntropy(request, timeout=TIMEOUT).data


def test_a_failing_device_is_unavailable() -> None:
    def broken(n: int) -> bytes:
        raise OSError("device unplugged")

    with EntropyServer(ServerConfig(address="127.0.0.1:0"), source=broken) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.EntropyServiceStub(channel)
        assert _code(lambda: stub.GetEntropy(EntropyRequest(bytes_needed=1),
                                             timeout=TIMEOUT)) == grpc.StatusCode.UNAVAILABLE


def test_unix_socket_and_stale_socket_file() -> None:
    with tempfile.TemporaryDirectory(prefix="qrs-", dir="/tmp") as directory:
        path = Path(directory) / "entropy.sock"
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))  # a socket file nobody listens on, as a killed server leaves
        stale.close()
        with EntropyServer(ServerConfig(address=f"unix://{path}")) as server, \
                grpc.insecure_channel(server.address) as channel:
            reply = pb2_grpc.EntropyServiceStub(channel).GetEntropy(
                EntropyRequest(bytes_needed=5), timeout=TIMEOUT)
            assert len(reply.data) == 5
        path.write_text("not a socket")
        with pytest.raises(EntropyServerError, match="not a socket"):
            EntropyServer(ServerConfig(address=f"unix://{path}")).start()
        assert path.read_text() == "not a socket"  # never deleted


def test_a_port_in_use_is_an_error_not_a_shared_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EntropyServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            EntropyServer(ServerConfig(address=f"127.0.0.1:{port}")).start()
    with EntropyServer(ServerConfig(address="127.0.0.1:0")) as first, \
            pytest.raises(EntropyServerError, match="cannot listen"):
        EntropyServer(ServerConfig(address=first.address)).start()


def test_stop_logs_the_call_counter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler.server")
    server = EntropyServer(ServerConfig(address="127.0.0.1:0"), source=os.urandom)
    server.start()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.EntropyServiceStub(channel)
        for _ in range(3):
            stub.GetEntropy(EntropyRequest(bytes_needed=2), timeout=TIMEOUT)
    server.stop(0)
    server.stop(0)  # idempotent
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"listening on {server.address}" in m for m in messages)
    assert any("stopped" in m and "'requests_served': 3" in m for m in messages)


@pytest.mark.parametrize(("options", "problem"), [
    ({"address": "0.0.0.0"}, "address"),
    ({"address": "::1:5"}, "brackets"),
    ({"tls_cert": "c.pem"}, "both a certificate and its key"),
    ({"tls_client_ca": "ca.pem"}, "needs TLS"),
    ({"address": "unix:///tmp/x.sock", "tls_cert": "c", "tls_key": "k"}, "unix socket"),
    ({"max_bytes_per_request": -1}, "max_bytes_per_request"),
    ({"api_key_header": "Api-Key"}, "lowercase"),
    ({"max_workers": 0}, "max_workers"),
])
def test_bad_configuration_is_refused(options: dict[str, object], problem: str) -> None:
    with pytest.raises(EntropyServerError, match=problem):
        ServerConfig(**options)  # type: ignore[arg-type]


def test_defaults_bind_loopback_only_and_key_is_masked() -> None:
    config = ServerConfig(api_key=API_KEY)  # type: ignore[arg-type]
    assert config.address == "127.0.0.1:50051"
    assert API_KEY not in repr(config)
    assert config.api_key.get_secret_value() == API_KEY
