"""Failures: server killed mid-stream and restarted, timeouts, retries, the circuit breaker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from qr_sampler.entropy._circuit_breaker import BreakerConfig, CircuitBreaker, CircuitOpenError
from qr_sampler.entropy._grpc_channel import channel_options
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qr_sampler.server import EntropyServer
from tests.sampler.entropy.grpc_test_support import FakeClock, RawServer

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]


def _breaker(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    config = BreakerConfig(**{"failure_threshold": 3, "recovery_window_s": 10.0,  # type: ignore[arg-type]
                              "max_recovery_window_s": 35.0, **overrides})
    return CircuitBreaker(config, max_timeout_s=5.0, clock=clock)


# --- the breaker on its own ---------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(2):
        assert breaker.record_failure() is False
    breaker.record_success(0.001)  # a success resets the count
    assert breaker.record_failure() is False
    assert breaker.record_failure() is False
    assert breaker.record_failure() is True
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="3 consecutive failures"):
        breaker.before_call()


def test_half_open_lets_exactly_one_trial_through_and_windows_grow(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.advance(0.2)
    assert breaker.before_call() is True  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # everyone else waits for the trial's verdict
    assert breaker.record_failure() is True  # trial failed: open again, window doubled
    assert breaker.snapshot()["recovery_window_s"] == 20.0
    clock.advance(20.1)
    assert breaker.before_call() is True
    breaker.record_failure()
    assert breaker.snapshot()["recovery_window_s"] == 35.0  # capped at the maximum
    clock.advance(35.1)
    assert breaker.before_call() is True
    assert breaker.record_success(0.002) is True  # recovered
    assert breaker.state == "closed"
    assert breaker.snapshot()["recovery_window_s"] == 10.0  # reset for the next incident
    assert breaker.before_call() is False


def test_a_trial_that_made_no_call_can_be_handed_on(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(11)
    assert breaker.before_call() is True
    breaker.cancel_trial()
    assert breaker.before_call() is True


def test_adaptive_timeout_follows_p99_and_timeouts_raise_it(clock: FakeClock) -> None:
    # A window of 10 refreshes its P99 on every sample (larger ones every window/10 samples).
    breaker = _breaker(clock, min_timeout_s=0.005, timeout_multiplier=1.5, window_size=10)
    for _ in range(9):
        breaker.record_success(0.010)
    assert breaker.timeout_s() == 5.0  # too few samples: the configured timeout
    breaker.record_success(0.010)
    assert breaker.timeout_s() == pytest.approx(0.015)  # P99 (10 ms) × 1.5
    breaker.record_success(0.020)
    assert breaker.timeout_s() == pytest.approx(0.030)  # P99 of 10 samples is the largest
    for _ in range(10):
        breaker.record_success(0.001)
    assert breaker.timeout_s() == 0.005  # the window forgot the slow calls; floor applies
    # Timeouts count as latency samples: repeated timeouts lift the timeout instead of pinning it.
    breaker.note_timeout(0.030)
    breaker.note_timeout(0.030)
    assert breaker.timeout_s() == pytest.approx(0.045)
    for _ in range(10):
        breaker.record_success(100.0)
    assert breaker.timeout_s() == 5.0  # never above the configured timeout
    big = _breaker(clock, window_size=1000)
    for _ in range(99):
        big.record_success(0.5)
    assert big.timeout_s() == 5.0  # a window of 1000 refreshes every 100 samples, not per call
    big.record_success(0.5)
    assert big.timeout_s() == pytest.approx(0.75)
    big.note_timeout(3.0)
    big.note_timeout(3.0)
    assert big.timeout_s() == pytest.approx(4.5)  # timeouts refresh at once (2 of 102 > 1 %)


def test_disabled_breaker_never_opens(clock: FakeClock) -> None:
    breaker = _breaker(clock, enabled=False)
    for _ in range(20):
        assert breaker.record_failure() is False
        breaker.record_success(0.001)
    assert breaker.before_call() is False
    assert breaker.timeout_s() == 5.0
    assert breaker.snapshot()["circuit"] == "disabled"


# --- against real servers ------------------------------------------------------------------------


def test_server_killed_mid_stream_then_restarted_on_the_same_port(
        clock: FakeClock, start_server: Start, make_source: Make) -> None:
    hold = threading.Event()
    release = threading.Event()
    in_flight = threading.Event()

    def gated_urandom(n: int) -> bytes:
        if hold.is_set():
            in_flight.set()
            release.wait(10)
        return os.urandom(n)

    server = start_server(source=gated_urandom)
    port = server.address.rsplit(":", 1)[1]
    breaker = BreakerConfig(failure_threshold=2, recovery_window_s=5.0, max_recovery_window_s=60.0,
                            min_timeout_s=1.0)
    grpc_source = make_source(server.address, mode="bidi_streaming", retry_count=0, timeout_s=3.0,
                              breaker=breaker, clock=clock)
    source = FallbackEntropySource(grpc_source, SystemEntropySource())
    assert not source.get_random_bytes_batch([256]).fallback

    # Kill the server while a request is in flight on the open stream.
    hold.set()
    results: list[object] = []
    fetch = threading.Thread(target=lambda: results.append(source.get_random_bytes_batch([256])))
    fetch.start()
    assert in_flight.wait(5)
    server.stop(0)
    release.set()
    fetch.join(10)
    (killed,) = results
    assert killed.fallback and len(killed.data) == 256  # type: ignore[attr-defined]
    assert grpc_source.health()["circuit"] == "closed"  # one failure so far

    # While it is down: the second failure opens the breaker; then no call is even tried.
    down = source.get_random_bytes_batch([256])
    assert down.fallback
    assert grpc_source.health()["circuit"] == "open"
    refused = source.get_random_bytes_batch([256])
    assert refused.fallback and "circuit breaker open" in refused.fallback_reason

    # Restarted on the same port: the readiness watcher sees it accept connections and ends the
    # pause at once; the breaker's clock does not have to reach the end of its window.
    hold.clear()
    restarted = start_server(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 10
    while (recovered := source.get_random_bytes_batch([256])).fallback:
        assert recovered.fallback_kind == "circuit_open"  # refused at once: no call is made
        assert time.monotonic() < deadline, "no quantum bytes within 10 s of the restart"
        time.sleep(0.01)
    assert len(recovered.data) == 256
    assert restarted.requests_served == 1  # the trial, and nothing before it
    health = grpc_source.health()
    assert health["circuit"] == "closed" and health["healthy"] is True
    assert health["times_opened"] == 1
    assert not source.get_random_bytes_batch([256]).fallback  # and the stream stays usable


@pytest.mark.parametrize("mode", ["unary", "server_streaming", "bidi_streaming"])
def test_a_hung_server_costs_one_timeout_then_the_fallback_serves(
        mode: str, raw_server: StartRaw, make_source: Make) -> None:
    def never_answers(request: bytes, context: grpc.ServicerContext) -> bytes:
        deadline = time.monotonic() + 5
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        return b""

    server = raw_server(unary=never_answers, stream=never_answers)
    grpc_source = make_source(server.address, mode=mode, retry_count=0, timeout_s=0.2)
    source = FallbackEntropySource(grpc_source, SystemEntropySource())
    start = time.monotonic()
    batch = source.get_random_bytes_batch([100])
    elapsed = time.monotonic() - start
    assert batch.fallback and "DEADLINE_EXCEEDED" in batch.fallback_reason
    assert 0.15 < elapsed < 2.0
    assert grpc_source.health()["consecutive_failures"] == 1


def test_a_bidi_timeout_abandons_the_request_but_keeps_the_stream(
        raw_server: StartRaw, make_source: Make) -> None:
    release = threading.Event()

    def slow_for_13(request: bytes, context: grpc.ServicerContext) -> bytes:
        parsed = EntropyRequest.FromString(request)
        if parsed.bytes_needed == 13:
            release.wait(5)
        return EntropyResponse(data=os.urandom(parsed.bytes_needed),
                               sequence_id=parsed.sequence_id).SerializeToString()

    server = raw_server(stream=slow_for_13)
    source = make_source(server.address, mode="bidi_streaming", retry_count=0, timeout_s=0.2)
    with pytest.raises(EntropyUnavailableError, match="DEADLINE_EXCEEDED"):
        source.get_random_bytes(13)
    release.set()  # the late reply now arrives on the stream and is dropped, not misdelivered
    assert len(source.get_random_bytes(20)) == 20
    assert len(source.get_random_bytes(13)) == 13
    assert len(server.streams) == 1  # one stream throughout
    assert len(server.requests) == 3


def test_a_retry_after_a_timeout_gets_a_longer_timeout(raw_server: StartRaw,
                                                       make_source: Make) -> None:
    stalls = [0]

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        if stalls[0] > 0:  # the next `stalls` calls each take 150 ms
            stalls[0] -= 1
            time.sleep(0.15)
        n = EntropyRequest.FromString(request).bytes_needed
        return EntropyResponse(data=os.urandom(n)).SerializeToString()

    server = raw_server(unary=answer)
    breaker = BreakerConfig(min_timeout_s=0.05, window_size=10)
    source = make_source(server.address, breaker=breaker, retry_count=1, timeout_s=2.0)
    for _ in range(10):
        source.get_random_bytes(8)
    assert source.health()["adaptive_timeout_ms"] == 50.0  # fast server: the floor
    stalls[0] = 2
    assert len(source.get_random_bytes(8)) == 8  # 50 ms timed out; the retry had 200 ms
    assert len(server.requests) == 12
    health = source.health()
    assert health["consecutive_failures"] == 0
    assert health["failed_calls"] == 1 and health["failed_fetches"] == 0


def test_the_breaker_counts_failed_fetches_not_attempts(make_source: Make) -> None:
    breaker = BreakerConfig(failure_threshold=3, min_timeout_s=1.0)
    source = make_source("127.0.0.1:1", retry_count=2, breaker=breaker, timeout_s=2.0)
    for expected in (1, 2):
        with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
            source.get_random_bytes(8)
        assert source.health()["consecutive_failures"] == expected
        assert source.health()["circuit"] == "closed"
    with pytest.raises(EntropyUnavailableError):
        source.get_random_bytes(8)
    assert source.health()["circuit"] == "open"
    assert source.health()["failed_calls"] == 9  # three attempts per fetch
    assert source.health()["failed_fetches"] == 3
    with pytest.raises(EntropyUnavailableError, match="circuit breaker open"):
        source.get_random_bytes(8)


def test_transient_failures_are_retried(raw_server: StartRaw, make_source: Make) -> None:
    calls = []

    def flaky(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append(request)
        if len(calls) % 3 != 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "device warming up")
        n = EntropyRequest.FromString(request).bytes_needed
        return EntropyResponse(data=os.urandom(n)).SerializeToString()

    server = raw_server(unary=flaky)
    assert len(make_source(server.address, retry_count=2).get_random_bytes(10)) == 10
    assert len(calls) == 3
    with pytest.raises(EntropyUnavailableError, match="device warming up") as info:
        make_source(server.address, retry_count=1).get_random_bytes(10)
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert len(calls) == 5


def test_keepalive_never_provokes_too_many_pings(raw_server: StartRaw) -> None:
    """An idle client with a 100 ms keepalive keeps its connection; a naive one gets GOAWAY.

    The server counts ping strikes as gRPC servers do by default (one allowed strike here to
    keep the test short). "Same connection" is seen by the server as the same client port.
    """
    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        return EntropyResponse(data=b"\x00" * 4).SerializeToString()

    server = raw_server(unary=answer, options=(("grpc.http2.max_ping_strikes", 1),))
    ours = GrpcClientConfig(address=server.address, keepalive_time_ms=100, retry_count=0)
    naive_options = [o for o in channel_options(ours)
                     if o[0] not in ("grpc.keepalive_permit_without_calls",
                                     "grpc.http2.max_pings_without_data")]
    naive_options += [("grpc.keepalive_permit_without_calls", 1),
                      ("grpc.http2.max_pings_without_data", 0)]
    stub_calls = []
    with grpc.insecure_channel(server.address, options=channel_options(ours)) as ours_channel, \
            grpc.insecure_channel(server.address, options=naive_options) as naive_channel:
        for channel in (ours_channel, naive_channel):
            stub_calls.append(channel.unary_unary("/qr_entropy.EntropyService/GetEntropy"))
        for call in stub_calls:
            call(EntropyRequest(bytes_needed=4).SerializeToString(), timeout=5)
        time.sleep(3.5)  # idle: pings (if any) go out every second
        for call in stub_calls:
            call(EntropyRequest(bytes_needed=4).SerializeToString(), timeout=5)
    ours_first, naive_first, ours_second, naive_second = server.peers
    assert ours_first == ours_second  # kept its connection
    assert naive_first != naive_second  # the control: GOAWAY too_many_pings, reconnected


def test_keepalive_options() -> None:
    assert not any("keepalive" in k for k, _ in channel_options(GrpcClientConfig()))
    options = dict(channel_options(GrpcClientConfig(keepalive_time_ms=30_000)))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.http2.max_pings_without_data"] == 1
