"""The protocol on the wire: standard protobuf bytes, other servers' names, wrong-length replies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent import futures
from types import ModuleType

import grpc
import pytest

from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from tests.sampler.entropy.grpc_test_support import (
    API_KEY,
    QRNG_CAP,
    QRNG_HEADER,
    QRNG_METHOD,
    QrngServer,
    RawServer,
)

Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]
MODES = ("unary", "server_streaming", "bidi_streaming")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _reply_for(request: bytes, length_delta: int = 0) -> bytes:
    parsed = EntropyRequest.FromString(request)
    return EntropyResponse(data=os.urandom(parsed.bytes_needed + length_delta),
                           sequence_id=parsed.sequence_id).SerializeToString()


def test_request_bytes_on_the_wire_are_standard_protobuf(raw_server: StartRaw,
                                                         make_source: Make) -> None:
    server = raw_server(unary=lambda req, ctx: _reply_for(req),
                        stream=lambda req, ctx: _reply_for(req))
    make_source(server.address, mode="unary").get_random_bytes(20_480)
    make_source(server.address, mode="server_streaming").get_random_bytes(300)
    make_source(server.address, mode="bidi_streaming").get_random_bytes_batch([5, 1])
    unary, streamed, bidi = server.requests
    # What the protobuf library produces, and what the spec says by hand: tag 0x08 (field 1,
    # varint) + varint(n); bidi adds tag 0x10 (field 2, varint) + the sequence id.
    assert unary == EntropyRequest(bytes_needed=20_480).SerializeToString()
    assert unary == b"\x08" + _varint(20_480) == b"\x08\x80\xa0\x01"
    assert streamed == EntropyRequest(bytes_needed=300).SerializeToString() == b"\x08\xac\x02"
    sequence_id = EntropyRequest.FromString(bidi).sequence_id
    assert sequence_id >= 1
    assert bidi == EntropyRequest(bytes_needed=6, sequence_id=sequence_id).SerializeToString()
    assert bidi == b"\x08\x06\x10" + _varint(sequence_id)


def test_reply_encoded_by_hand_is_decoded(raw_server: StartRaw, make_source: Make) -> None:
    data = bytes(range(256)) * 4

    def reply(request: bytes, context: grpc.ServicerContext) -> bytes:
        # field 1 (bytes) + field 3 (varint timestamp) + field 4 (string device id)
        return (b"\x0a" + _varint(len(data)) + data + b"\x18" + _varint(1_700_000_000_123)
                + b"\x22\x04qrng")

    server = raw_server(unary=reply)
    batch = make_source(server.address).get_random_bytes_batch([1024])
    assert batch.data == data
    assert batch.generation_timestamp_ns == 1_700_000_000_123
    assert batch.device_id == "qrng"


def test_other_names_same_field_numbers_with_key_and_chunking(
        qrng_server: QrngServer, make_source: Make,
        qrng_modules: tuple[ModuleType, ModuleType]) -> None:
    source = make_source(qrng_server.address, method_path=QRNG_METHOD, stream_method_path="",
                         api_key_header=QRNG_HEADER, api_key=API_KEY,
                         max_bytes_per_request=QRNG_CAP)
    batch = source.get_random_bytes_batch([20_480])
    # Two calls (13,312 + 7,168), joined in order, exactly what the server sent.
    assert [len(d) for d in qrng_server.sent] == [13_312, 7_168]
    assert batch.data == b"".join(qrng_server.sent)
    assert batch.device_id == "QRNG-TEST-0001"
    # Our request decodes as theirs.
    protos, _ = qrng_modules
    request = EntropyRequest(bytes_needed=20_480).SerializeToString()
    assert protos.RandomBytesRequest.FromString(request).num_bytes == 20_480
    # Many rows in one fetch, chunk boundaries not aligned with rows.
    rows = source.get_random_bytes_batch([20_480] * 3).rows()
    assert [len(r) for r in rows] == [20_480] * 3
    assert [len(d) for d in qrng_server.sent[2:]] == [13_312] * 4 + [8_192]


def test_without_the_cap_the_server_refuses_and_the_error_says_what_to_set(
        qrng_server: QrngServer, make_source: Make) -> None:
    source = make_source(qrng_server.address, method_path=QRNG_METHOD,
                         api_key_header=QRNG_HEADER, api_key=API_KEY)
    with pytest.raises(EntropyUnavailableError, match="QR_GRPC_MAX_BYTES_PER_REQUEST") as info:
        source.get_random_bytes(20_480)
    assert "INVALID_ARGUMENT" in str(info.value)
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert qrng_server.rejected == ["INVALID_ARGUMENT"]  # not retried: it cannot succeed


@pytest.mark.parametrize(("key", "code"), [
    (None, "UNAUTHENTICATED"), ("wrong-key", "PERMISSION_DENIED"), (API_KEY, None)])
def test_api_key_accepted_missing_wrong(key: str | None, code: str | None,
                                        qrng_server: QrngServer, make_source: Make) -> None:
    extra = {"api_key": key} if key is not None else {}
    source = make_source(qrng_server.address, method_path=QRNG_METHOD,
                         api_key_header=QRNG_HEADER, max_bytes_per_request=QRNG_CAP, **extra)
    assert source.health()["authenticated"] is (key is not None)
    if code is None:
        assert len(source.get_random_bytes(100)) == 100
        assert qrng_server.rejected == []
        return
    with pytest.raises(EntropyUnavailableError, match=code) as info:
        source.get_random_bytes(100)
    assert "QR_GRPC_API_KEY" in str(info.value)
    assert qrng_server.rejected == [code]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("delta", [-1, +1, -100])
def test_short_or_long_reply_is_rejected_and_falls_back_flagged(
        mode: str, delta: int, raw_server: StartRaw, make_source: Make) -> None:
    server = raw_server(unary=lambda req, ctx: _reply_for(req, delta),
                        stream=lambda req, ctx: _reply_for(req, delta))
    source = make_source(server.address, mode=mode, retry_count=2)
    with pytest.raises(EntropyUnavailableError,
                       match=f"returned {1000 + delta} bytes for a request of 1000"):
        source.get_random_bytes(1000)
    assert len(server.requests) == 1  # a wrong length is not retried
    fallback = FallbackEntropySource(source, SystemEntropySource())
    batch = fallback.get_random_bytes_batch([1000])
    assert batch.fallback and "returned" in batch.fallback_reason
    assert len(batch.data) == 1000


def test_server_streaming_joins_a_reply_split_over_messages(raw_server: StartRaw,
                                                            make_source: Make) -> None:
    pieces = [os.urandom(400), os.urandom(600)]

    def split_reply(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for piece in pieces:
            yield EntropyResponse(data=piece).SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "qr_entropy.EntropyService",
        {"StreamEntropy": grpc.unary_stream_rpc_method_handler(split_reply)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        source = make_source(f"127.0.0.1:{port}", mode="server_streaming")
        assert source.get_random_bytes(1000) == b"".join(pieces)
        with pytest.raises(EntropyUnavailableError, match="returned 1000 bytes for a request "
                                                          "of 999"):
            source.get_random_bytes(999)
    finally:
        server.stop(0)


def test_bidi_needs_echoed_sequence_ids(raw_server: StartRaw, make_source: Make) -> None:
    server = raw_server(stream=lambda req, ctx: EntropyResponse(
        data=os.urandom(EntropyRequest.FromString(req).bytes_needed)).SerializeToString())
    source = make_source(server.address, mode="bidi_streaming", retry_count=0)
    with pytest.raises(EntropyUnavailableError, match="echo sequence_id"):
        source.get_random_bytes(10)


def test_wrong_method_path_says_unimplemented(raw_server: StartRaw, make_source: Make) -> None:
    server = raw_server(unary=lambda req, ctx: _reply_for(req))
    source = make_source(server.address, method_path="/qr_entropy.EntropyService/Nope")
    with pytest.raises(EntropyUnavailableError, match="UNIMPLEMENTED") as info:
        source.get_random_bytes(1)
    assert "QR_GRPC_METHOD_PATH" in str(info.value)
