"""The gRPC client against the reference server: every mode and address family; start-up rules."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.entropy import build_entropy_source
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource, chunk_sizes
from qr_sampler.errors import EntropyUnavailableError, SettingsError
from qr_sampler.server import EntropyServer
from qr_sampler.settings import settings_from_mapping

MODES = ("unary", "server_streaming", "bidi_streaming")
Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_returns_exactly_the_bytes_asked_with_provenance(
        mode: str, start_server: Start, make_source: Make) -> None:
    server = start_server(device_id="urandom-test-1")
    source = make_source(server.address, mode=mode)
    before = time.time_ns()
    batch = source.get_random_bytes_batch([20_480, 100, 3])
    assert len(batch.data) == 20_583
    assert batch.counts == (20_480, 100, 3)
    assert [len(row) for row in batch.rows()] == [20_480, 100, 3]
    assert batch.source == "quantum_grpc" and not batch.fallback
    assert batch.device_id == "urandom-test-1"
    assert before <= batch.generation_timestamp_ns <= time.time_ns()
    assert batch.latency_ns > 0
    assert len(source.get_random_bytes(7)) == 7
    assert server.requests_served == 2
    assert len(set(batch.data)) > 200  # random bytes, not zeros or a constant


@pytest.mark.parametrize("mode", MODES)
def test_unix_socket(mode: str, start_server: Start, make_source: Make,
                     socket_dir: Path) -> None:
    server = start_server(f"unix://{socket_dir}/entropy.sock")
    assert server.address == f"unix://{socket_dir}/entropy.sock"
    source = make_source(server.address, mode=mode)
    assert len(source.get_random_bytes(4096)) == 4096
    assert server.requests_served == 1


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("mode", MODES)
def test_ipv6_loopback(mode: str, start_server: Start, make_source: Make) -> None:
    server = start_server("[::1]:0")
    assert server.address.startswith("[::1]:")
    source = make_source(server.address, mode=mode)
    assert len(source.get_random_bytes(1000)) == 1000


def test_bidi_stream_is_shared_safely_by_concurrent_callers(
        start_server: Start, make_source: Make) -> None:
    server = start_server()
    source = make_source(server.address, mode="bidi_streaming", max_bytes_per_request=1000)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker(size: int) -> None:
        try:
            for _ in range(20):
                results.append(source.get_random_bytes(size))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(500 + 700 * i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(len(r) for r in results) == sorted(500 + 700 * i for i in range(6)
                                                     for _ in range(20))
    assert len(set(results)) == len(results)  # no reply was handed to two callers
    # Chunked at 1000 bytes: every chunk was one request on the shared stream.
    assert server.requests_served == sum(len(chunk_sizes(500 + 700 * i, 1000))
                                         for i in range(6)) * 20


def test_bidi_reopens_the_stream_after_it_broke(start_server: Start, make_source: Make) -> None:
    server = start_server()
    port = server.address.rsplit(":", 1)[1]
    source = make_source(server.address, mode="bidi_streaming", retry_count=1)
    assert len(source.get_random_bytes(10)) == 10
    server.stop(0)  # breaks the open stream
    replacement = start_server(f"127.0.0.1:{port}")
    assert len(source.get_random_bytes(10)) == 10  # first attempt fails, the retry reconnects
    assert replacement.requests_served == 1


def test_no_connection_before_the_first_fetch(make_source: Make) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = make_source(f"127.0.0.1:{port}", mode="bidi_streaming", retry_count=0,
                         timeout_s=2.0)
    assert source.health()["connected"] is False
    with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
        source.get_random_bytes(1)
    assert source.health()["connected"] is True


def test_built_from_settings_by_the_registry_inside_its_fallback(start_server: Start) -> None:
    server = start_server()
    settings = settings_from_mapping({
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": server.address,
        "QR_GRPC_MODE": "bidi_streaming",
        "QR_GRPC_MAX_BYTES_PER_REQUEST": "13312",
        "QR_GRPC_TIMEOUT_MS": "3000",
    })
    source = build_entropy_source(settings)
    try:
        assert isinstance(source, FallbackEntropySource)
        primary = source.primary
        assert isinstance(primary, QuantumGrpcEntropySource)
        assert primary.config.timeout_s == 3.0 and primary.config.max_bytes_per_request == 13312
        assert primary.config.wait_for_rate_limit is False  # QR_FALLBACK_MODE=system
        batch = source.get_random_bytes_batch([20_480])
        assert len(batch.data) == 20_480 and not batch.fallback
        assert server.requests_served == 2  # 13,312 + 7,168
    finally:
        source.close()


@pytest.mark.parametrize("mode", ["server_streaming", "bidi_streaming"])
def test_streaming_without_a_stream_path_fails_at_start_up(mode: str) -> None:
    with pytest.raises(SettingsError, match="QR_GRPC_STREAM_METHOD_PATH"):
        settings_from_mapping({"QR_GRPC_MODE": mode, "QR_GRPC_STREAM_METHOD_PATH": ""})
    # Built directly (no settings), the client checks the same rule at construction.
    with pytest.raises(SettingsError, match="QR_GRPC_STREAM_METHOD_PATH") as info:
        GrpcClientConfig(mode=mode, stream_method_path="")  # type: ignore[arg-type]
    assert "QR_GRPC_MODE=unary" in str(info.value)


@pytest.mark.parametrize("header", ["Api-Key", "grpc-key", "key-bin", ""])
def test_bad_api_key_header_is_refused_at_start_up(header: str) -> None:
    with pytest.raises(SettingsError, match="QR_GRPC_API_KEY_HEADER"):
        GrpcClientConfig(api_key_header=header)


def test_unreadable_tls_file_names_the_setting(make_source: Make, tmp_path: Path) -> None:
    source = make_source("127.0.0.1:1", tls=True, tls_ca_cert=str(tmp_path / "missing.pem"))
    with pytest.raises(EntropyUnavailableError, match="QR_GRPC_TLS_CA_CERT"):
        source.get_random_bytes(1)


def test_closed_source_refuses_and_close_is_idempotent(start_server: Start,
                                                       make_source: Make) -> None:
    server = start_server()
    source = make_source(server.address, mode="bidi_streaming")
    source.get_random_bytes(1)
    source.close()
    source.close()
    with pytest.raises(EntropyUnavailableError, match="closed"):
        source.get_random_bytes(1)
    assert source.health()["healthy"] is False


@pytest.mark.parametrize(("n", "cap", "expected"), [
    (20_480, 13_312, [13_312, 7_168]), (13_312, 13_312, [13_312]), (1, 5, [1]),
    (10, 3, [3, 3, 3, 1]),
])
def test_chunk_sizes(n: int, cap: int, expected: list[int]) -> None:
    assert chunk_sizes(n, cap) == expected


def test_zero_bytes_is_refused(make_source: Make) -> None:
    source = make_source("127.0.0.1:1")
    with pytest.raises(EntropyUnavailableError, match="total"):
        source.get_random_bytes_batch([0, 0])
