"""Client-side limits: calls per minute (never exceeded) and the daily byte budget."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.entropy._rate_limit import WINDOW_S, DailyByteBudget, SlidingWindowLimiter
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyBudgetExhaustedError, EntropyUnavailableError
from qr_sampler.server import EntropyServer
from qr_sampler.settings import settings_from_mapping
from tests.sampler.entropy.grpc_test_support import FakeClock

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
DAY = 86_400.0


# --- the limiter itself ------------------------------------------------------------------------


def test_limiter_never_allows_more_than_the_limit_in_any_window(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(7, clock=clock)
    rng = random.Random(5)
    granted: list[float] = []
    for _ in range(2_000):
        clock.advance(rng.expovariate(1 / 4.0))  # ~15 attempts per minute against a limit of 7
        count = rng.choice([1, 1, 1, 2, 3])
        if limiter.try_acquire(count) == 0.0:
            granted += [clock.now] * count
    assert len(granted) > 500  # the limit was actually used, not just refused
    for i, start in enumerate(granted):
        in_window = sum(1 for t in granted[i:i + 20] if t - start < WINDOW_S)
        assert in_window <= 7


def test_limiter_reports_the_wait_and_takes_nothing_when_refusing(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(3, clock=clock)
    assert limiter.try_acquire(2) == 0.0
    clock.advance(10)
    assert limiter.try_acquire(1) == 0.0
    assert limiter.try_acquire(1) == pytest.approx(50.0)  # the oldest expires at t0 + 60
    assert limiter.try_acquire(3) == pytest.approx(60.0 - 10.0 + 10.0)  # needs all three free
    assert limiter.try_acquire(4) == float("inf")
    assert limiter.in_window() == 3
    assert SlidingWindowLimiter(0).try_acquire(10**6) == 0.0  # 0 = unlimited


def test_limiter_waits_only_when_the_wait_fits(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    assert limiter.acquire(max_wait_s=5.0) == pytest.approx(60.0)
    assert clock.sleeps == []  # a wait that cannot fit is not even started
    assert limiter.acquire(max_wait_s=61.0) == 0.0
    assert clock.sleeps == [pytest.approx(60.0)]


def test_daily_budget_reserve_refund_and_utc_rollover(clock: FakeClock) -> None:
    clock.now = 20_000 * DAY + DAY - 10  # 23:59:50 UTC
    budget = DailyByteBudget(100, wall_clock=clock)
    day = budget.reserve(60)
    assert day == 20_000 and budget.left == 40
    assert budget.reserve(41) is None and budget.used == 60  # refusal reserves nothing
    budget.refund(20, day)
    assert budget.left == 60
    clock.advance(20)  # past midnight: a fresh budget, yesterday's refund is not carried over
    assert budget.left == 100
    budget.refund(50, day)
    assert budget.used == 0
    assert DailyByteBudget(0).reserve(10**12) is not None  # 0 = unlimited


# --- through the client, against a server that enforces the same limit ------------------------


def test_client_never_exceeds_the_rate_limit_and_the_server_never_refuses(
        clock: FakeClock, start_server: Start, make_source: Make) -> None:
    server = start_server(rate_limit_per_min=5, clock=clock)
    source = make_source(server.address, rate_limit_per_min=5, clock=clock)
    outcomes = []
    for _ in range(12):  # one fetch every 7 s for 84 s
        try:
            source.get_random_bytes(64)
            outcomes.append("ok")
        except EntropyBudgetExhaustedError as exc:
            assert "QR_GRPC_RATE_LIMIT_PER_MIN=5" in str(exc)
            outcomes.append("refused")
        clock.advance(7)
    # t=0..28 s: 5 calls; t=35..56: refused; t=63, 70, 77: the oldest calls have expired.
    assert outcomes == ["ok"] * 5 + ["refused"] * 4 + ["ok"] * 3
    assert server.requests_served == 8
    assert server.stats.summary()["rejected"] == {}  # the client never made a refused call
    # Control: without a client limit the same server does refuse, so the above is meaningful.
    # At t=84 s the server's window holds the calls of t=28, 63, 70, 77: one more fits.
    unlimited = make_source(server.address, clock=clock)
    unlimited.get_random_bytes(1)
    with pytest.raises(EntropyBudgetExhaustedError, match="RESOURCE_EXHAUSTED"):
        unlimited.get_random_bytes(1)


def test_a_chunked_fetch_takes_one_permit_per_call(clock: FakeClock, start_server: Start,
                                                    make_source: Make) -> None:
    server = start_server(clock=clock)
    source = make_source(server.address, rate_limit_per_min=4, max_bytes_per_request=100,
                         mode="bidi_streaming", clock=clock)
    source.get_random_bytes(300)  # 3 calls
    with pytest.raises(EntropyBudgetExhaustedError):
        source.get_random_bytes(200)  # 2 more would make 5
    source.get_random_bytes(100)
    assert server.requests_served == 4
    with pytest.raises(EntropyBudgetExhaustedError, match="5 calls in one fetch exceed it"):
        source.get_random_bytes(500)  # 5 calls can never fit in 4 per minute


def test_rate_limited_fetch_is_served_by_the_fallback_and_flagged(
        clock: FakeClock, start_server: Start, make_source: Make) -> None:
    server = start_server()
    fallback = FallbackEntropySource(
        make_source(server.address, rate_limit_per_min=1, clock=clock), SystemEntropySource())
    assert not fallback.get_random_bytes_batch([32]).fallback
    batch = fallback.get_random_bytes_batch([32])
    assert batch.fallback and "QR_GRPC_RATE_LIMIT_PER_MIN" in batch.fallback_reason
    assert len(batch.data) == 32
    assert server.requests_served == 1


def test_with_fallback_mode_error_the_client_waits_for_a_permit(
        clock: FakeClock, start_server: Start, make_source: Make, tmp_path: Path) -> None:
    assert settings_from_mapping({"QR_FALLBACK_MODE": "error"}).fallback_mode == "error"
    server = start_server()
    waiting = make_source(server.address, rate_limit_per_min=2, wait_for_rate_limit=True,
                          timeout_s=90.0, clock=clock, sleep=clock.sleep)
    waiting.get_random_bytes(8)
    clock.advance(15)
    waiting.get_random_bytes(8)
    waiting.get_random_bytes(8)  # waits until the first call's second has left the window
    # 61 - 15: calls are counted per whole second, and a second overlaps a 60 s window for 61 s.
    assert clock.sleeps == [pytest.approx(46.0)]
    assert server.requests_served == 3
    # The wait is bounded by the timeout: 5 s is not enough for the next permit.
    # Its own quota folder: the same server in the same folder would share the calls above.
    impatient = make_source(server.address, rate_limit_per_min=1, wait_for_rate_limit=True,
                            timeout_s=5.0, clock=clock, sleep=clock.sleep,
                            quota_state_dir=str(tmp_path / "impatient"))
    impatient.get_random_bytes(8)
    with pytest.raises(EntropyBudgetExhaustedError, match="longer than QR_GRPC_TIMEOUT_MS"):
        impatient.get_random_bytes(8)
    assert clock.sleeps == [pytest.approx(46.0)]


def test_daily_budget_stops_drawing_logs_once_and_renews(
        clock: FakeClock, start_server: Start, make_source: Make,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler.entropy.quantum_grpc")

    def budget_lines() -> int:  # INFO: the fallback wrapper owns the WARNING of an outage
        return sum("daily byte budget" in r.getMessage() for r in caplog.records)

    clock.now = 20_000 * DAY + DAY - 60  # one minute before midnight UTC
    server = start_server()
    source = make_source(server.address, daily_byte_budget=30_000, wall_clock=clock)
    source.get_random_bytes(20_480)
    for _ in range(3):
        with pytest.raises(EntropyBudgetExhaustedError) as info:
            source.get_random_bytes(20_480)
    message = str(info.value)
    assert "QR_GRPC_DAILY_BYTE_BUDGET=30000" in message and "9520 bytes left" in message
    assert "00:00 UTC" in message
    assert server.requests_served == 1  # refused before any call
    assert budget_lines() == 1  # the event is logged once, not once per token
    assert source.health()["bytes_today"] == 20_480
    clock.advance(120)  # the next UTC day
    source.get_random_bytes(20_480)
    with pytest.raises(EntropyBudgetExhaustedError):
        source.get_random_bytes(20_480)
    assert budget_lines() == 2  # a new day, a new event
    assert server.requests_served == 2


def test_a_failed_fetch_gives_its_bytes_back_to_the_budget(
        clock: FakeClock, start_server: Start, make_source: Make) -> None:
    server = start_server()
    source = make_source(server.address, daily_byte_budget=1_000, wall_clock=clock,
                         retry_count=0)
    source.get_random_bytes(400)
    server.stop(0)
    with pytest.raises(EntropyUnavailableError):
        source.get_random_bytes(400)
    assert source.health()["bytes_today"] == 400
