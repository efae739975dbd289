"""Online health tests (NIST SP 800-90B §4.4): cutoffs, detection, false alarms, and a server
that starts sending zeros while serving."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import binom

from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.health import (
    APT_WINDOW,
    HealthTests,
    adaptive_proportion_cutoff,
    binomial_critical_value,
    longest_run_at_least,
    max_window_proportion,
    repetition_count_cutoff,
)
from qr_sampler.entropy.mock import MockUniformEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.registry import build_entropy_source
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.server import EntropyServer
from qr_sampler.settings import settings_from_mapping

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
BLOCK = 20_480


# --- cutoffs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "cutoff"), [(0.5, 410), (1, 311), (2, 177), (4, 62), (8, 13)])
def test_apt_cutoffs_match_the_standards_table_for_alpha_2_to_the_minus_20(
        h: float, cutoff: int) -> None:
    """NIST SP 800-90B Table 2 (non-binary, W = 512, α = 2^-20)."""
    assert adaptive_proportion_cutoff(h, 20) == cutoff


@pytest.mark.parametrize("h", [0.3, 1.0, 3.3, 6.0, 7.0, 7.9, 8.0])
@pytest.mark.parametrize("k", [16, 20, 30, 40, 64])
def test_the_binomial_quantile_without_scipy_agrees_with_scipy(h: float, k: int) -> None:
    p, alpha = 2.0 ** -h, 2.0 ** -k
    ours = binomial_critical_value(APT_WINDOW, p, alpha)
    assert binom.sf(ours, APT_WINDOW, p) <= alpha  # P(X > k) within α ...
    assert ours == 0 or binom.sf(ours - 1, APT_WINDOW, p) > alpha  # ... and k is the smallest


def test_rct_cutoff_formula() -> None:
    assert repetition_count_cutoff(7.0, 40) == 1 + math.ceil(40 / 7) == 7
    assert repetition_count_cutoff(8.0, 20) == 4
    assert repetition_count_cutoff(1.0, 20) == 21
    with pytest.raises(ValueError):
        repetition_count_cutoff(0, 40)


def test_the_defaults_and_their_false_alarm_rate() -> None:
    tests = HealthTests()
    assert (tests.rct_cutoff, tests.apt_cutoff) == (7, 26)
    # For ideal uniform bytes, per 20,480-byte block (the figures in health.py's docstring).
    rct = (BLOCK - tests.rct_cutoff + 1) * (255 / 256) * 256.0 ** -(tests.rct_cutoff - 1)
    apt = (BLOCK // APT_WINDOW) * binom.sf(tests.apt_cutoff - 2, APT_WINDOW - 1, 1 / 256)
    assert rct < 1e-10 and apt < 1e-16


# --- the vectorised searches against plain loops -------------------------------------------------


def _longest_run(data: bytes) -> tuple[int, int]:
    best, best_start, start = 1, 0, 0
    for i in range(1, len(data)):
        if data[i] != data[i - 1]:
            start = i
        elif i - start + 1 > best:
            best, best_start = i - start + 1, start
    return best_start, best


@pytest.mark.parametrize("seed", range(40))
def test_run_search_agrees_with_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 3, size=int(rng.integers(1, 400)), dtype=np.uint8)  # many runs
    _, length = _longest_run(data.tobytes())
    for cutoff in range(2, 12):
        found = longest_run_at_least(data, cutoff)
        if length >= cutoff:
            assert found is not None and found[1] >= cutoff
            s, n = found
            assert len(set(data[s:s + n].tolist())) == 1  # a real run, measured in full
            assert s == 0 or data[s - 1] != data[s]
        else:
            assert found is None


def test_window_proportion_counts_the_first_value_of_each_window() -> None:
    data = np.frombuffer(os.urandom(3 * APT_WINDOW + 100), np.uint8).copy()
    data[APT_WINDOW] = 7
    data[APT_WINDOW + 1:APT_WINDOW + 41] = 7  # window 2: its first value, 41 times in all
    value, count = max_window_proportion(data)  # type: ignore[misc]
    assert value == 7 and count >= 41
    expected = max(int(np.count_nonzero(w == w[0]))
                   for w in data[:3 * APT_WINDOW].reshape(3, APT_WINDOW))
    assert count == expected
    assert max_window_proportion(data[:APT_WINDOW - 1]) is None  # no full window


# --- detection -----------------------------------------------------------------------------------


def test_healthy_bytes_pass() -> None:
    tests = HealthTests()
    for _ in range(200):
        assert tests.check(os.urandom(BLOCK)) == ""
    assert tests.check(MockUniformEntropySource(seed=1, bias=0.3).get_random_bytes(BLOCK)) == ""


@pytest.mark.parametrize(("name", "make"), [
    ("all zeros", lambda rng: bytes(BLOCK)),
    ("stuck at 0xA5", lambda rng: b"\xa5" * BLOCK),
    ("stuck after a good start", lambda rng: os.urandom(BLOCK // 2) + b"\x00" * (BLOCK // 2)),
    ("a short stuck burst", lambda rng: os.urandom(5000) + b"\x42" * 7 + os.urandom(5000)),
    ("alternating two values", lambda rng: b"\x00\xff" * (BLOCK // 2)),
    ("half the bytes one value", lambda rng: np.where(
        rng.random(BLOCK) < 0.5, 0, rng.integers(0, 256, BLOCK)).astype(np.uint8).tobytes()),
    ("a quarter one value", lambda rng: np.where(
        rng.random(BLOCK) < 0.25, 200, rng.integers(0, 256, BLOCK)).astype(np.uint8).tobytes()),
    ("4 bits of entropy", lambda rng: rng.integers(0, 16, BLOCK, dtype=np.uint8).tobytes()),
])
def test_broken_bytes_always_fail(name: str, make: Callable[[np.random.Generator], bytes]) -> None:
    tests = HealthTests()
    for seed in range(20):
        assert tests.check(make(np.random.default_rng(seed))), name


def test_long_batches_are_examined_in_pieces_without_blind_spots() -> None:
    """A 32-row batch is tested in 64 KB pieces: a run across a piece boundary and a bad window
    in a later piece are found like anywhere else."""
    tests = HealthTests()
    healthy = bytearray(os.urandom(32 * BLOCK))
    assert tests.check(bytes(healthy)) == ""
    across = bytearray(healthy)
    across[65_536 - 3:65_536 + 4] = b"\x00" * 7  # 3 bytes before the boundary, 4 after
    assert "repetition count test" in tests.check(bytes(across))
    late = bytearray(healthy)
    window = 600 * APT_WINDOW  # in the 5th piece
    late[window:window + APT_WINDOW:2] = b"\x99" * (APT_WINDOW // 2)
    assert "adaptive proportion test" in tests.check(bytes(late))


def test_tiny_blocks() -> None:
    tests = HealthTests()
    assert tests.check(bytes(6)) == ""  # shorter than the RCT cutoff: cannot fail
    assert "repetition count test" in tests.check(bytes(7))
    assert tests.check(b"") == ""


# --- while serving -------------------------------------------------------------------------------


def test_a_server_sending_zeros_is_flagged_never_labelled_quantum(
        start_server: Start, make_source: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qr_sampler.entropy")
    stuck = threading.Event()

    def device(n: int) -> bytes:
        return bytes(n) if stuck.is_set() else os.urandom(n)

    server = start_server(source=device)
    source = FallbackEntropySource(make_source(server.address), SystemEntropySource(),
                                   health_tests=HealthTests())
    assert not source.fetch_batch([BLOCK]).fallback
    stuck.set()
    batches = [source.fetch_batch([BLOCK, BLOCK]) for _ in range(30)]
    for batch in batches:
        assert batch.fallback and batch.fallback_kind == "health_test"
        assert "repetition count test" in batch.fallback_reason
        assert batch.data != bytes(2 * BLOCK)  # the zeros were never handed out
    assert source.health()["health_test_failures"] == 30
    stuck.clear()
    assert not source.fetch_batch([BLOCK]).fallback
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "health_test" in warnings[0].getMessage()
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1


def test_with_no_fallback_a_failing_block_raises_health_test(
        start_server: Start, make_source: Make) -> None:
    server = start_server(source=bytes)
    source = FallbackEntropySource(make_source(server.address), None, health_tests=HealthTests())
    with pytest.raises(EntropyUnavailableError) as info:
        source.fetch_batch([512])
    assert info.value.kind == "health_test"


def test_the_settings_switch_the_tests_and_generators_are_not_tested() -> None:
    on = build_entropy_source(settings_from_mapping({
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc", "QR_HEALTH_MIN_ENTROPY": "4",
        "QR_HEALTH_ALPHA_EXPONENT": "20"}))
    assert isinstance(on, FallbackEntropySource) and on.health_tests is not None
    assert (on.health_tests.rct_cutoff, on.health_tests.apt_cutoff) == (6, 62)
    off = build_entropy_source(settings_from_mapping({
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc", "QR_HEALTH_TESTS": "false"}))
    assert isinstance(off, FallbackEntropySource) and off.health_tests is None
    system = build_entropy_source(settings_from_mapping({}))
    assert isinstance(system, FallbackEntropySource) and system.health_tests is None
    assert system.health()["health_tests"] is False
