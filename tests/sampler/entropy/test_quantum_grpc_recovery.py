"""Recovery after an outage: quantum bytes return within seconds of the server's return, the hot
path never waits on a dead server, and an outage costs a handful of log lines, not thousands.

Real reference servers on 127.0.0.1, stopped and restarted on the same port. The "sampler" is a
loop that fetches every few milliseconds (its pace is the scenario, not a synchronisation);
waits are bounded and the only timing claims are "within N s" with a generous N.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

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
from qr_sampler.types import EntropyBatch
from tests.sampler.entropy.grpc_test_support import FakeClock, RawServer

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]

#: The issue's target is 5 s; the assertion leaves room for a loaded CI machine.
RECOVERY_BOUND_S = 10.0
STEP_S = 0.01


def _fetch_until(source: FallbackEntropySource, done: Callable[[EntropyBatch], bool],
                 within_s: float, on_step: Callable[[], None] | None = None) -> EntropyBatch:
    """Fetch like a sampler (one fetch per step) until ``done(batch)``; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        batch = source.fetch_batch([512])
        assert len(batch.data) == 512  # every step gets its bytes, quantum or flagged
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"not done within {within_s} s"
        if on_step is not None:
            on_step()
        time.sleep(STEP_S)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("qr_sampler")]


def _recoveries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "recovered" in r.getMessage()]


@pytest.mark.parametrize(("outage_s", "mode"), [(1.0, "unary"), (1.0, "server_streaming"),
                                                (5.0, "bidi_streaming")])
def test_quantum_bytes_return_within_seconds_after_a_real_outage(
        outage_s: float, mode: str, start_server: Start, make_source: Make,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler")
    server = start_server()
    port = server.address.rsplit(":", 1)[1]
    # The shipped defaults (breaker, timeouts, backoff); only the retries are fewer, to keep the
    # number of failing calls small on this shared machine.
    grpc_source = make_source(server.address, mode=mode, breaker=BreakerConfig())
    source = FallbackEntropySource(grpc_source, SystemEntropySource())
    assert not source.fetch_batch([512]).fallback

    server.stop(0)
    down_until = time.monotonic() + outage_s
    batches = [source.fetch_batch([512])]
    while time.monotonic() < down_until:  # the outage: every step is served and flagged
        batches.append(source.fetch_batch([512]))
        time.sleep(STEP_S)
    assert all(b.fallback for b in batches)
    assert {b.fallback_kind for b in batches} <= {"unavailable", "circuit_open", "timeout"}
    assert grpc_source.health()["circuit"] == "open"

    restarted = start_server(f"127.0.0.1:{port}")
    back_at = time.monotonic()
    recovered = _fetch_until(source, lambda b: not b.fallback, RECOVERY_BOUND_S)
    took = time.monotonic() - back_at
    assert recovered.source == "quantum_grpc" and restarted.requests_served >= 1
    assert took < RECOVERY_BOUND_S
    assert grpc_source.health()["circuit"] == "closed"
    # One line when it failed over, one when it recovered: not one per token.
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "serving from 'system'" in warnings[0].getMessage()
    assert len(_recoveries(caplog)) == 1
    assert len(batches) > 20  # the outage really was many steps long


def test_a_long_outage_is_summarised_every_10_s_and_recovers_as_fast(
        start_server: Start, make_source: Make, caplog: pytest.LogCaptureFixture) -> None:
    """60 s of outage on injected clocks (the breaker's and the logger's), ~2 s of real time.

    What the injected clock cannot stretch is gRPC's reconnect backoff, which runs on real
    time: it reaches its 1 s cap after ~3 s, so the real-time part of a 60 s outage is the
    same as the 5 s case above.
    """
    caplog.set_level(logging.INFO, logger="qr_sampler")
    clock = FakeClock()
    server = start_server()
    port = server.address.rsplit(":", 1)[1]
    grpc_source = make_source(server.address, breaker=BreakerConfig(), clock=clock)
    source = FallbackEntropySource(grpc_source, SystemEntropySource(), clock=clock)
    assert not source.fetch_batch([512]).fallback

    server.stop(0)
    for _ in range(200):  # 60 simulated seconds, one step every 0.3 s
        assert source.fetch_batch([512]).fallback
        clock.advance(0.3)
        time.sleep(STEP_S)
    health = grpc_source.health()
    assert health["circuit"] == "open"
    assert health["recovery_window_s"] <= 4.0  # capped: never 40 s, never 300 s

    start_server(f"127.0.0.1:{port}")
    back_at = time.monotonic()
    _fetch_until(source, lambda b: not b.fallback, RECOVERY_BOUND_S,
                 on_step=lambda: clock.advance(STEP_S))
    assert time.monotonic() - back_at < RECOVERY_BOUND_S
    warnings = _warnings(caplog)
    # One failover line, then a summary at most every 10 simulated seconds.
    assert 1 <= len(warnings) <= 1 + 6, [r.getMessage() for r in warnings]
    assert "serving from" in warnings[0].getMessage()
    assert all("still failing" in r.getMessage() for r in warnings[1:])
    assert len(_recoveries(caplog)) == 1


def test_a_reachable_but_failing_server_is_retried_on_the_capped_window(
        raw_server: StartRaw, make_source: Make, caplog: pytest.LogCaptureFixture) -> None:
    """The server accepts connections throughout (the watcher cannot tell it is broken): the
    breaker's own trial calls find its return, and their pause never exceeds the cap."""
    caplog.set_level(logging.INFO, logger="qr_sampler")
    clock = FakeClock()
    broken = threading.Event()

    def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
        if broken.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "device warming up")
        n = EntropyRequest.FromString(request).bytes_needed
        return EntropyResponse(data=os.urandom(n)).SerializeToString()

    server = raw_server(unary=answer)
    grpc_source = make_source(server.address, breaker=BreakerConfig(), clock=clock)
    source = FallbackEntropySource(grpc_source, SystemEntropySource(), clock=clock)
    assert not source.fetch_batch([64]).fallback
    broken.set()
    calls_before = len(server.requests)
    for _ in range(3):  # 3 failing fetches × 3 attempts open the breaker
        assert source.fetch_batch([64]).fallback
    assert grpc_source.health()["circuit"] == "open"
    # The calls found "no device": the watcher first takes the server for gone, then sees it
    # accept a connection at once (real time, milliseconds) and allows one early trial.
    _wait_for(lambda: not grpc_source.health()["waiting_for_server"], 10.0)
    for _ in range(600):  # 60 simulated seconds of a failing device
        assert source.fetch_batch([64]).fallback
        clock.advance(0.1)
    trials = len(server.requests) - calls_before - 9
    # The early trial, then one per window (2 s, then 4 s): never one per step.
    assert 1 < trials <= 1 + 60 / 2, trials
    assert grpc_source.health()["recovery_window_s"] == 4.0
    broken.clear()
    steps = 0
    while source.fetch_batch([64]).fallback:
        steps += 1
        assert steps <= 41, "not back within the 4 s cap"
        clock.advance(0.1)
    assert 1 <= len(_warnings(caplog)) <= 7
    assert len(_recoveries(caplog)) == 1


def test_the_hot_path_never_waits_on_a_server_that_does_not_answer() -> None:
    """A listener that accepts TCP but never speaks HTTP/2 (a hung process, a proxy without a
    backend): after the breaker opens, the watcher holds it open, so no step makes a call, and
    every step is served at once however far the breaker's clock moves."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    clock = FakeClock()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    grpc_source = QuantumGrpcEntropySource(
        GrpcClientConfig(address=address, timeout_s=0.3, retry_count=0, quota_state_dir=None,
                         breaker=BreakerConfig(failure_threshold=2)), clock=clock)
    source = FallbackEntropySource(grpc_source, SystemEntropySource(), clock=clock)
    try:
        for _ in range(2):
            assert source.fetch_batch([64]).fallback_kind in ("timeout", "unavailable")
        assert grpc_source.health()["circuit"] == "open"
        _wait_for(lambda: grpc_source.health()["waiting_for_server"], 10.0)
        failed_calls = grpc_source.health()["failed_calls"]
        start = time.monotonic()
        for _ in range(100):
            clock.advance(1.0)  # far past any recovery window
            batch = source.fetch_batch([64])
            assert batch.fallback and batch.fallback_kind == "circuit_open"
        assert time.monotonic() - start < 5.0  # 100 steps, none waited for a call
        assert grpc_source.health()["failed_calls"] == failed_calls  # no call was even tried
    finally:
        source.close()
        stop.set()
        listener.close()
        thread.join(5)
        for conn in accepted:
            conn.close()


def _wait_for(condition: Callable[[], object], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not true within {within_s} s"
        time.sleep(0.02)


# --- the log lines of an outage, on their own ---------------------------------------------------


class _Switchable(SystemEntropySource):
    name = "switchable"
    health_tested = True

    def __init__(self) -> None:
        self.down = False

    def get_random_bytes(self, n: int) -> bytes:
        if self.down:
            raise EntropyUnavailableError(f"down (attempt at {time.monotonic_ns()} ns)")
        return os.urandom(n)


@pytest.fixture
def switchable() -> Iterator[tuple[_Switchable, FallbackEntropySource, FakeClock]]:
    clock = FakeClock()
    primary = _Switchable()
    yield primary, FallbackEntropySource(primary, SystemEntropySource(), clock=clock), clock


def test_an_outage_logs_one_warning_a_summary_per_10_s_and_one_recovery(
        switchable: tuple[_Switchable, FallbackEntropySource, FakeClock],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="qr_sampler.entropy.fallback")
    primary, source, clock = switchable
    primary.down = True
    for _ in range(5_000):  # 50 s of failures whose text changes every time
        assert source.fetch_batch([8]).fallback
        clock.advance(0.01)
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 5  # t = 0 (failed over), then summaries at 10, 20, 30, 40 s
    assert "serving from 'system'" in lines[0].getMessage()
    assert all(re.search(r"still failing: 10\d\d fetches served by 'system' in the last 10 s "
                         r"\(unavailable: 10\d\d\)", r.getMessage()) for r in lines[1:])
    assert source.health()["failing_since_s"] == pytest.approx(50.0, abs=0.1)
    primary.down = False
    for _ in range(100):
        assert not source.fetch_batch([8]).fallback
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "recovered after 50.0 s; 5000 fetches failed" in infos[0].getMessage()
    assert source.health()["fallback_count"] == 5_000
    assert source.health()["failing_since_s"] is None


def test_a_flapping_source_stays_within_one_warning_per_10_s(
        switchable: tuple[_Switchable, FallbackEntropySource, FakeClock],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler.entropy.fallback")
    primary, source, clock = switchable
    for step in range(3_000):  # 30 s, failing every other step
        primary.down = step % 2 == 0
        source.fetch_batch([8])
        clock.advance(0.01)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) <= len(warnings)


def test_with_no_fallback_an_outage_raises_with_its_kind_and_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler.entropy.fallback")
    clock = FakeClock()
    primary = _Switchable()
    source = FallbackEntropySource(primary, None, clock=clock)
    primary.down = True
    for _ in range(50):
        with pytest.raises(EntropyUnavailableError) as info:
            source.fetch_batch([8])
        assert info.value.kind == "unavailable"
        clock.advance(0.01)
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no fallback (QR_FALLBACK_MODE=error)" in line.getMessage()


# --- the breaker's hold and release, and the watcher's lifetime -----------------------------------


def test_a_hold_outlasts_the_window_and_a_release_ends_the_pause_at_once(
        clock: FakeClock) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1), 5.0, clock=clock)
    watcher, stale = object(), object()
    assert breaker.record_failure() is True
    breaker.hold(watcher)
    clock.advance(100.0)  # far past the window: held, so still no trial
    with pytest.raises(CircuitOpenError, match="does not accept connections"):
        breaker.before_call()
    assert breaker.snapshot()["waiting_for_server"] is True
    breaker.release(stale, now=True)  # not the holder: ignored
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.release(watcher, now=True)
    assert breaker.before_call() is True  # the trial, without waiting out anything
    assert breaker.record_failure() is True  # it failed: open again, window doubled, no hold
    assert breaker.snapshot()["recovery_window_s"] == 4.0
    assert breaker.snapshot()["waiting_for_server"] is False
    clock.advance(4.1)
    assert breaker.before_call() is True
    breaker.record_failure()
    assert breaker.snapshot()["recovery_window_s"] == 4.0  # the cap (QR_CB_MAX_RECOVERY_WINDOW_S)
    breaker.hold(watcher)
    breaker.release(watcher, now=False)  # the watcher ended without a verdict: the timer again
    clock.advance(4.1)
    assert breaker.before_call() is True
    assert breaker.record_success(0.001) is True and breaker.state == "closed"
    breaker.hold(watcher)  # a hold outside the open state means nothing
    assert breaker.before_call() is False


def test_closing_the_source_ends_the_watch_and_its_hold(make_source: Make) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    source = make_source(address, retry_count=0, breaker=BreakerConfig(failure_threshold=1))
    with pytest.raises(EntropyUnavailableError, match="UNAVAILABLE"):
        source.get_random_bytes(8)
    _wait_for(lambda: source.health()["waiting_for_server"], 10.0)
    watcher = source._watcher
    assert watcher is not None and watcher.is_alive()
    source.close()
    assert not watcher.is_alive() and watcher.outcome == "stopped"
    assert source.health()["waiting_for_server"] is False


def test_reconnect_options_keep_the_channel_quick_and_let_slow_links_connect() -> None:
    options = dict(channel_options(GrpcClientConfig(timeout_s=3.0)))
    assert options["grpc.initial_reconnect_backoff_ms"] == 100
    assert options["grpc.max_reconnect_backoff_ms"] == 1000
    # gRPC's "minimum backoff" is the deadline of one connection attempt: one call's worth.
    assert options["grpc.min_reconnect_backoff_ms"] == 3000
