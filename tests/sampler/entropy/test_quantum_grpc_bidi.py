"""The bidi transport under stress: many callers on one stream, a server that stops answering,
callers giving up while others wait, and close() while a fetch is blocked.

These pin the guarantees listed in ``qr_sampler/entropy/_grpc_bidi.py``: every caller gets its
own correctly sized reply, a timeout is a bounded DEADLINE_EXCEEDED that leaves the stream usable
for the callers still waiting, and close() leaves no thread behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from qr_sampler.entropy._grpc_bidi import BidiTransport
from qr_sampler.entropy._grpc_transport import CallFailed, Reply
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qr_sampler.server import EntropyServer
from tests.sampler.entropy.grpc_test_support import RawServer

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]
STREAM_PATH = "/qr_entropy.EntropyService/StreamEntropy"


def _bidi_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("qr-grpc")]


def _echo(request: bytes) -> bytes:
    parsed = EntropyRequest.FromString(request)
    return EntropyResponse(data=os.urandom(parsed.bytes_needed),
                           sequence_id=parsed.sequence_id).SerializeToString()


@pytest.fixture
def transport_to() -> Iterator[Callable[[str], BidiTransport]]:
    """``transport_to(address)``: a BidiTransport on its own channel, closed at teardown."""
    opened: list[tuple[BidiTransport, grpc.Channel]] = []

    def make(address: str) -> BidiTransport:
        channel = grpc.insecure_channel(address)
        transport = BidiTransport(channel, STREAM_PATH, ())
        opened.append((transport, channel))
        return transport

    yield make
    for transport, channel in opened:
        transport.close()
        channel.close()


def test_concurrent_callers_each_get_their_own_correctly_sized_replies(
        start_server: Start, make_source: Make) -> None:
    server = start_server()
    source = make_source(server.address, mode="bidi_streaming", retry_count=0, timeout_s=5.0)
    threads_n, fetches = 8, 50
    results: dict[int, list[bytes]] = {i: [] for i in range(threads_n)}
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def worker(i: int) -> None:
        try:
            start.wait(10)
            for k in range(fetches):
                results[i].append(source.get_random_bytes(100 + 37 * i + k))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for i, got in results.items():  # in order, each of the size its own caller asked for
        assert [len(b) for b in got] == [100 + 37 * i + k for k in range(fetches)]
    everything = [b for got in results.values() for b in got]
    assert len(set(everything)) == len(everything)  # no reply was handed to two callers
    assert server.requests_served == threads_n * fetches
    assert source.health()["failed_calls"] == 0


def test_a_server_that_stops_replying_costs_a_bounded_deadline_exceeded(
        raw_server: StartRaw, transport_to: Callable[[str], BidiTransport]) -> None:
    hang = threading.Event()
    release = threading.Event()

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        if hang.is_set():
            release.wait(10)
        return _echo(request)

    server = raw_server(stream=answer)
    transport = transport_to(server.address)
    assert [len(r.data) for r in transport.fetch([64, 32], 5.0)] == [64, 32]
    hang.set()
    started = time.monotonic()
    with pytest.raises(CallFailed) as info:
        transport.fetch([16, 8], 0.2)
    elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.timed_out_after_s == 0.2  # the breaker counts it as a latency sample
    assert info.value.retryable and info.value.done == ()
    assert 0.15 < elapsed < 2.0
    # The server answers again: the late replies are dropped and the next fetch is served.
    hang.clear()
    release.set()
    replies = transport.fetch([24], 5.0)
    assert [len(r.data) for r in replies] == [24]
    assert len(server.streams) == 1


def test_a_caller_giving_up_does_not_disturb_the_callers_still_waiting(
        raw_server: StartRaw, transport_to: Callable[[str], BidiTransport]) -> None:
    """The server answers in order and stalls on a 13-byte request: callers queued behind it
    keep waiting (their own timeouts are longer) and get their replies once it answers."""
    release = threading.Event()
    stalled = threading.Event()

    def slow_for_13(request: bytes, context: grpc.ServicerContext) -> bytes:
        if EntropyRequest.FromString(request).bytes_needed == 13:
            stalled.set()
            release.wait(10)
        return _echo(request)

    server = raw_server(stream=slow_for_13)
    transport = transport_to(server.address)
    transport.fetch([1], 5.0)  # the stream is open before the callers race for it
    impatient: list[BaseException] = []
    patient: dict[int, list[Reply]] = {}
    errors: list[BaseException] = []

    def give_up() -> None:
        try:
            transport.fetch([13], 0.2)
        except CallFailed as exc:
            impatient.append(exc)

    def wait_long(size: int) -> None:
        try:
            patient[size] = transport.fetch([size, size + 1], 10.0)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    first = threading.Thread(target=give_up)
    first.start()
    assert stalled.wait(5)
    others = [threading.Thread(target=wait_long, args=(100 * (i + 1),)) for i in range(4)]
    for t in others:
        t.start()
    first.join(5)
    (failure,) = impatient
    assert isinstance(failure, CallFailed) and failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    release.set()
    for t in others:
        t.join(15)
    assert not errors
    assert {size: [len(r.data) for r in replies] for size, replies in patient.items()} == {
        100 * (i + 1): [100 * (i + 1), 100 * (i + 1) + 1] for i in range(4)}
    assert len(server.streams) == 1


def test_close_while_a_fetch_is_blocked_returns_promptly_and_leaves_no_thread(
        raw_server: StartRaw, transport_to: Callable[[str], BidiTransport]) -> None:
    in_flight = threading.Event()
    release = threading.Event()

    def hangs(request: bytes, context: grpc.ServicerContext) -> bytes:
        in_flight.set()
        release.wait(10)
        return _echo(request)

    server = raw_server(stream=hangs)
    before = _bidi_threads()
    transport = transport_to(server.address)
    outcome: list[BaseException | list[Reply]] = []

    def fetch() -> None:
        try:
            outcome.append(transport.fetch([32], 30.0))
        except BaseException as exc:  # collected and asserted below
            outcome.append(exc)

    fetcher = threading.Thread(target=fetch)
    fetcher.start()
    try:
        assert in_flight.wait(5)
        assert len(_bidi_threads()) > len(before)  # the stream's thread is running
        started = time.monotonic()
        transport.close()
        fetcher.join(5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert not fetcher.is_alive() and elapsed < 3.0
    (failure,) = outcome
    assert isinstance(failure, CallFailed) and "closed" in failure.reason
    deadline = time.monotonic() + 3.0  # close() already joined; allow for a slow scheduler
    while _bidi_threads() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _bidi_threads() == before
    with pytest.raises(CallFailed, match="closed"):
        transport.fetch([1], 1.0)
