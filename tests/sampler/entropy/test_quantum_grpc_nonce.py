"""The nonce of every fetch: on the wire in every transport, echoed by our server, verified by
the client; a wrong echo is a failure whose bytes are never used; other protos keep working."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent import futures
from types import ModuleType

import grpc
import pytest

from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qr_sampler.server import EntropyServer
from tests.sampler.entropy.grpc_test_support import (
    API_KEY,
    QRNG_CAP,
    QRNG_HEADER,
    QRNG_METHOD,
    QrngServer,
    RawServer,
)

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]
MODES = ("unary", "server_streaming", "bidi_streaming")
NONCE = hashlib.sha256(b"run-1/step-7/tokens-42,17").digest()


@pytest.mark.parametrize("mode", MODES)
def test_our_server_echoes_and_the_batch_says_verified(
        mode: str, start_server: Start, make_source: Make) -> None:
    server = start_server(max_bytes_per_request=4096)
    source = make_source(server.address, mode=mode, max_bytes_per_request=4096)
    batch = source.fetch_batch([5000, 5000], NONCE)  # three chunks, each echoing
    assert batch.echo_verified is True and batch.nonce == NONCE
    assert len(batch.data) == 10_000 and server.requests_served == 3
    plain = source.fetch_batch([10])  # no nonce, nothing to verify
    assert plain.echo_verified is None and plain.nonce == b""


@pytest.mark.parametrize("mode", MODES)
def test_every_request_carries_the_nonce_in_field_20001(
        mode: str, raw_server: StartRaw, make_source: Make) -> None:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = EntropyRequest.FromString(request)
        return EntropyResponse(data=os.urandom(parsed.bytes_needed), nonce=parsed.nonce,
                               sequence_id=parsed.sequence_id).SerializeToString()

    server = raw_server(unary=echo, stream=echo)
    source = make_source(server.address, mode=mode, max_bytes_per_request=100)
    assert source.fetch_batch([250], NONCE).echo_verified is True
    assert len(server.requests) == 3
    # Field 20001, wire type 2: tag varint(20001 << 3 | 2) = 0x8a 0xe2 0x09, then the length.
    field = b"\x8a\xe2\x09\x20" + NONCE
    assert all(request.endswith(field) for request in server.requests)


@pytest.mark.parametrize("mode", MODES)
def test_a_server_that_does_not_echo_gives_none(
        mode: str, raw_server: StartRaw, make_source: Make) -> None:
    def no_echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = EntropyRequest.FromString(request)
        return EntropyResponse(data=os.urandom(parsed.bytes_needed),
                               sequence_id=parsed.sequence_id).SerializeToString()

    server = raw_server(unary=no_echo, stream=no_echo)
    batch = make_source(server.address, mode=mode).fetch_batch([64], NONCE)
    assert batch.echo_verified is None and not batch.fallback


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_echo_is_a_failure_and_its_bytes_are_never_used(
        mode: str, raw_server: StartRaw, make_source: Make) -> None:
    sent: list[bytes] = []

    def stale_echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = EntropyRequest.FromString(request)
        data = os.urandom(parsed.bytes_needed)
        sent.append(data)
        return EntropyResponse(data=data, nonce=b"replayed" + parsed.nonce[8:],
                               sequence_id=parsed.sequence_id).SerializeToString()

    server = raw_server(unary=stale_echo, stream=stale_echo)
    source = make_source(server.address, mode=mode, retry_count=2)
    with pytest.raises(EntropyUnavailableError, match="echoed nonce") as info:
        source.fetch_batch([64], NONCE)
    assert info.value.kind == "echo_mismatch"
    assert len(server.requests) == 1  # not retried: a wrong echo is no transient failure
    health = source.health()
    assert health["echo_mismatches"] == 1 and health["consecutive_failures"] == 1
    fallback = FallbackEntropySource(source, SystemEntropySource())
    batch = fallback.fetch_batch([64], NONCE)
    assert batch.fallback and batch.fallback_kind == "echo_mismatch"
    assert batch.echo_verified is None and batch.nonce == NONCE
    assert batch.data not in sent


def test_an_echo_from_some_chunks_only_is_a_mismatch(raw_server: StartRaw,
                                                     make_source: Make) -> None:
    answered: list[bytes] = []

    def every_other(request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = EntropyRequest.FromString(request)
        echo = parsed.nonce if len(answered) % 2 == 0 else b""
        answered.append(echo)
        return EntropyResponse(data=os.urandom(parsed.bytes_needed), nonce=echo).SerializeToString()

    server = raw_server(unary=every_other)
    source = make_source(server.address, max_bytes_per_request=10)
    with pytest.raises(EntropyUnavailableError, match="1 of 2 replies echoed") as info:
        source.fetch_batch([20], NONCE)
    assert info.value.kind == "echo_mismatch"


def test_server_streaming_parts_must_echo_alike(make_source: Make) -> None:
    def split_reply(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        nonce = EntropyRequest.FromString(request).nonce
        yield EntropyResponse(data=os.urandom(400), nonce=nonce).SerializeToString()
        yield EntropyResponse(data=os.urandom(600), nonce=b"x" * 32).SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "qr_entropy.EntropyService",
        {"StreamEntropy": grpc.unary_stream_rpc_method_handler(split_reply)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        source = make_source(f"127.0.0.1:{port}", mode="server_streaming")
        with pytest.raises(EntropyUnavailableError) as info:
            source.fetch_batch([1000], NONCE)
        assert info.value.kind == "echo_mismatch"
    finally:
        server.stop(0)


def test_a_foreign_proto_server_keeps_working_without_echo(
        qrng_server: QrngServer, make_source: Make,
        qrng_modules: tuple[ModuleType, ModuleType]) -> None:
    """firefly-1-like: other package, service and message names, unary only, ``x-api-key``."""
    source = make_source(qrng_server.address, method_path=QRNG_METHOD, stream_method_path="",
                         api_key_header=QRNG_HEADER, api_key=API_KEY,
                         max_bytes_per_request=QRNG_CAP)
    batch = source.fetch_batch([20_480], NONCE)
    assert batch.echo_verified is None and batch.data == b"".join(qrng_server.sent)
    assert qrng_server.rejected == []
    # Their parser skips our nonce as an unknown field.
    protos, _ = qrng_modules
    ours = EntropyRequest(bytes_needed=512, nonce=NONCE).SerializeToString()
    assert protos.RandomBytesRequest.FromString(ours).num_bytes == 512


def test_sources_without_a_nonce_channel_record_it_and_say_unknown() -> None:
    class Plugin(EntropySource):
        name = "plugin"

        def get_random_bytes(self, n: int) -> bytes:
            return b"\x01" * n

    batch = Plugin().fetch_batch([3, 4], NONCE)
    assert batch.nonce == NONCE and batch.echo_verified is None and batch.counts == (3, 4)
    system = SystemEntropySource().fetch_batch([8], NONCE)
    assert system.nonce == NONCE and system.echo_verified is None
