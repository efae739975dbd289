"""Fixtures for the gRPC client tests: real servers on loopback, a fake clock, TLS material.

Every server here listens on 127.0.0.1, [::1] or a unix socket and is stopped at teardown;
every client is closed at teardown.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from qr_sampler.entropy._circuit_breaker import BreakerConfig
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.server import EntropyServer, ServerConfig
from tests.sampler.entropy.grpc_test_support import (
    API_KEY,
    QRNG_CAP,
    QRNG_HEADER,
    FakeClock,
    QrngServer,
    RawServer,
    TlsFiles,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_server() -> Iterator[Callable[..., EntropyServer]]:
    """Start reference servers (``start_server(address=..., **ServerConfig options)``)."""
    servers: list[EntropyServer] = []

    def start(address: str = "127.0.0.1:0", *, source: Callable[[int], bytes] = os.urandom,
              clock: Callable[[], float] = time.monotonic, **options: Any) -> EntropyServer:
        config = ServerConfig(address=address, grace_period_s=0, **options)
        server = EntropyServer(config, source=source, clock=clock)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture(autouse=True)
def _no_xdg_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quota state must never land in the real user's state folder."""
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


@pytest.fixture
def make_source(tmp_path: Path) -> Iterator[Callable[..., QuantumGrpcEntropySource]]:
    """Build clients: ``make_source(address, clock=, wall_clock=, sleep=, **config)``.

    ``config`` are GrpcClientConfig fields; ``api_key`` may be a plain string here. Unless a
    test brings its own ``breaker``, the adaptive timeout's floor is 1 s instead of 5 ms: these
    tests share two cores with everything else, and a call that waits a few ms for a CPU must
    not turn into a timeout (the breaker's own tests cover the adaptive timeout). The quota
    state goes to this test's own folder unless ``quota_state_dir`` is given; a fake ``clock``
    also drives the quotas (``wall_clock``) unless a test gives that one separately.
    """
    sources: list[QuantumGrpcEntropySource] = []

    def make(address: str, *, clock: Callable[[], float] | None = None,
             wall_clock: Callable[[], float] | None = None,
             sleep: Callable[[float], None] | None = None,
             **config: Any) -> QuantumGrpcEntropySource:
        config.setdefault("breaker", BreakerConfig(min_timeout_s=1.0))
        config.setdefault("quota_state_dir", str(tmp_path / "quota"))
        wall_clock = wall_clock if wall_clock is not None else clock
        if isinstance(config.get("api_key"), str):
            config["api_key"] = SecretStr(config["api_key"])
        injected: dict[str, Any] = {k: v for k, v in
                                    (("clock", clock), ("wall_clock", wall_clock),
                                     ("sleep", sleep)) if v is not None}
        source = QuantumGrpcEntropySource(GrpcClientConfig(address=address, **config),
                                          **injected)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets (pytest's tmp_path can exceed the 108-byte limit)."""
    with tempfile.TemporaryDirectory(prefix="qrs-", dir="/tmp") as path:
        yield Path(path)


# --- servers that speak raw bytes, for protocol edge cases ------------------------------------

RawHandler = Callable[[bytes, grpc.ServicerContext], bytes]


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    """``raw_server(unary=fn, stream=fn, service=..., options=...)``: fn(request_bytes, ctx)."""
    servers: list[grpc.Server] = []

    def start(*, unary: RawHandler | None = None, stream: RawHandler | None = None,
              service: str = "qr_entropy.EntropyService",
              options: tuple[tuple[str, Any], ...] = ()) -> RawServer:
        record = RawServer("", [], [], [])

        def unary_handler(request: bytes, context: grpc.ServicerContext) -> bytes:
            record.requests.append(request)
            record.peers.append(context.peer())
            assert unary is not None
            return unary(request, context)

        def stream_handler(requests: Iterator[bytes],
                           context: grpc.ServicerContext) -> Iterator[bytes]:
            record.streams.append(context.peer())
            for request in requests:
                record.requests.append(request)
                assert stream is not None
                yield stream(request, context)

        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        if unary is not None:
            handlers["GetEntropy"] = grpc.unary_unary_rpc_method_handler(unary_handler)
        if stream is not None:
            handlers["StreamEntropy"] = grpc.stream_stream_rpc_method_handler(stream_handler)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        record.address = f"127.0.0.1:{port}"
        return record

    yield start
    for server in servers:
        server.stop(0)


# --- a third-party style QRNG server (other .proto, API key, 13,312-byte cap) -----------------

@pytest.fixture(scope="session")
def qrng_modules() -> tuple[ModuleType, ModuleType]:
    """The qrng .proto compiled at test time (messages module, services module)."""
    proto_dir = str(Path(__file__).parent / "qrng_test_server")
    sys.path.insert(0, proto_dir)
    try:
        protos, services = grpc.protos_and_services("qrng_service.proto")  # type: ignore[attr-defined]
    finally:
        sys.path.remove(proto_dir)
    return protos, services


@pytest.fixture
def qrng_server(qrng_modules: tuple[ModuleType, ModuleType]) -> Iterator[QrngServer]:
    """Unary only, API key required in ``x-api-key``, at most 13,312 bytes per request."""
    protos, services = qrng_modules
    record = QrngServer("", [], [])

    class Servicer(services.QuantumRNGServicer):  # type: ignore[misc,name-defined]
        def GetRandomBytes(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            metadata = dict(context.invocation_metadata())
            if QRNG_HEADER not in metadata:
                record.rejected.append("UNAUTHENTICATED")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing API key")
            if metadata[QRNG_HEADER] != API_KEY:
                record.rejected.append("PERMISSION_DENIED")
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "invalid API key")
            if not 1 <= request.num_bytes <= QRNG_CAP:
                record.rejected.append("INVALID_ARGUMENT")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"num_bytes must be between 1 and {QRNG_CAP}")
            data = os.urandom(request.num_bytes)
            record.sent.append(data)
            return protos.RandomBytesResponse(
                random_data=data, request_counter=len(record.sent), measured_at_ns=time.time_ns(),
                device_serial="QRNG-TEST-0001", detector_temperature_c=21.5)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services.add_QuantumRNGServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    record.address = f"127.0.0.1:{port}"
    yield record
    server.stop(0)


# --- TLS material: a throwaway CA, a server certificate and a client certificate --------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
              issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
              sans: list[x509.GeneralName] | None = None,
              usage: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(filename: str, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
        path = directory / filename
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    keys = {k: ec.generate_private_key(ec.SECP256R1()) for k in ("ca", "srv", "cli", "other")}
    ca = issue("qrs test CA", keys["ca"], name("qrs test CA"), keys["ca"], ca=True)
    other = issue("other CA", keys["other"], name("other CA"), keys["other"], ca=True)
    server = issue("entropy.test", keys["srv"], ca.subject, keys["ca"],
                   sans=[x509.DNSName("entropy.test"), x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client = issue("qrs client", keys["cli"], ca.subject, keys["ca"],
                   usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return TlsFiles(ca=write("ca.pem", ca), server_cert=write("server.pem", server),
                    server_key=write("server.key", keys["srv"]),
                    client_cert=write("client.pem", client),
                    client_key=write("client.key", keys["cli"]), other_ca=write("other.pem", other))
