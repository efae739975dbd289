"""Built-in sources, the registry (including a real entry-point plugin) and the fallback."""

from __future__ import annotations

import ctypes
import itertools
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qr_sampler import build_entropy_source, load_settings, omp_team
from qr_sampler.entropy import registry, vdso
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.mock import (
    MAX_ABS_BIAS,
    MockUniformEntropySource,
    tilted_byte_probabilities,
)
from qr_sampler.entropy.system import CHUNK_BYTES, PARALLEL_FROM_BYTES, SystemEntropySource
from qr_sampler.entropy.timing import TimingNoiseEntropySource
from qr_sampler.errors import EntropyUnavailableError, SettingsError


def test_system_source_returns_exactly_n_bytes() -> None:
    source = SystemEntropySource()
    assert [len(source.get_random_bytes(n)) for n in (1, 7, 20480)] == [1, 7, 20480]
    batch = source.get_random_bytes_batch([3, 5])
    assert [len(r) for r in batch.rows()] == [3, 5] and batch.source == "system"
    assert batch.fallback is False and batch.latency_ns > 0


def test_system_source_draws_a_large_request_in_parallel_slices() -> None:
    source = SystemEntropySource(threads=3)
    n = 2 * PARALLEL_FROM_BYTES + 1  # three slices, the last one shorter
    data = source.get_random_bytes(n)
    assert len(data) == n
    size = -(-n // 3)
    heads = {data[i : i + 64] for i in (0, size, 2 * size)}
    assert len(heads) == 3  # each slice is its own draw
    assert 120 < np.frombuffer(data, dtype=np.uint8).mean() < 135
    source.close()


class _PatternFill:
    """Stands in for the vDSO: fills each slice with its own byte, so the test sees where every
    slice landed in the one result (random bytes could not show a slice left unwritten)."""

    def __init__(self, fail_at: int = -1) -> None:
        self.fail_at = fail_at
        self.calls: list[tuple[int, int]] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def fill(self, address: int, n: int) -> None:
        with self._lock:
            index = len(self.calls)
            self.calls.append((address, n))
            self.threads.add(threading.get_ident())
        if index == self.fail_at:
            raise OSError("the kernel refused")
        ctypes.memset(address, 0x41 + index, n)

    def read(self, n: int) -> bytes:  # as VdsoGetrandom.read: one fill of a new object
        out, address = vdso.writable_bytes(n)
        self.fill(address, n)
        return out


def test_parallel_chunks_are_written_in_place_and_tile_the_result() -> None:
    source = SystemEntropySource(threads=3)
    if source._vdso is None:
        pytest.skip("this kernel's vDSO has no getrandom")
    filler = _PatternFill()
    source._vdso = filler  # type: ignore[assignment]
    n = 2 * PARALLEL_FROM_BYTES + 1
    data = source.get_random_bytes(n)
    source.close()
    assert isinstance(data, bytes) and len(data) == n
    start = min(address for address, _ in filler.calls)
    spans = sorted((address - start, length) for address, length in filler.calls)
    assert spans[0][0] == 0 and sum(length for _, length in spans) == n
    assert all(a + la == b for (a, la), (b, _) in itertools.pairwise(spans))
    assert len(spans) == len(range(0, n, CHUNK_BYTES))
    for offset, length in spans:  # each chunk holds one fill, whole
        assert len(set(data[offset : offset + length])) == 1


def test_a_chunk_that_fails_fails_the_request_after_every_helper_is_done() -> None:
    source = SystemEntropySource(threads=3)
    if source._vdso is None:
        pytest.skip("this kernel's vDSO has no getrandom")
    filler = _PatternFill(fail_at=1)
    source._vdso = filler  # type: ignore[assignment]
    n = 2 * PARALLEL_FROM_BYTES + 1
    with pytest.raises(EntropyUnavailableError, match="the kernel refused"):
        source.get_random_bytes(n)
    # Every chunk was taken exactly once, and every helper was done when the error came back.
    assert len(filler.calls) == len(range(0, n, CHUNK_BYTES))
    assert len({address for address, _ in filler.calls}) == len(filler.calls)
    source.close()


def test_the_engine_thread_without_a_team_draws_a_large_request_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside ``engine_thread`` (a CPU host's step) with no OpenMP team to hand it to, no helper
    takes a chunk (the other cores are torch's); outside, they do. (With a team:
    ``test_omp_team.py``.)"""
    source = SystemEntropySource(threads=3)
    if source._vdso is None:
        pytest.skip("this kernel's vDSO has no getrandom")
    alone, shared = _PatternFill(), _PatternFill()
    n = 4 * PARALLEL_FROM_BYTES
    source._vdso = alone  # type: ignore[assignment]
    monkeypatch.setattr(omp_team, "ENABLED", False)
    with omp_team.engine_thread():
        assert len(source.get_random_bytes(n)) == n
    assert alone.threads == {threading.get_ident()} and len(alone.calls) == 1
    source._vdso = shared  # type: ignore[assignment]
    assert len(source.get_random_bytes(n)) == n
    source.close()
    assert len(shared.calls) == len(range(0, n, CHUNK_BYTES))


def _draw_in_child(source: SystemEntropySource, out: Any) -> None:
    out.put(len(source.get_random_bytes(PARALLEL_FROM_BYTES * 2)))


def test_system_source_keeps_working_in_a_forked_child() -> None:
    """A helper pool made before a fork has no threads in the child: the source makes a new one
    (without that, the child would wait forever on its slices)."""
    import multiprocessing

    source = SystemEntropySource(threads=2)
    source.get_random_bytes(PARALLEL_FROM_BYTES * 2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_draw_in_child, args=(source, out))
    child.start()
    child.join(timeout=30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and out.get(timeout=5) == PARALLEL_FROM_BYTES * 2
    source.close()


def test_mock_is_reproducible_and_exactly_uniform_in_distribution() -> None:
    a, b = MockUniformEntropySource(seed=9), MockUniformEntropySource(seed=9)
    assert a.get_random_bytes(1000) == b.get_random_bytes(1000)
    assert MockUniformEntropySource(seed=10).get_random_bytes(1000) != a.get_random_bytes(1000)
    counts = np.bincount(np.frombuffer(a.get_random_bytes(256_000), np.uint8), minlength=256)
    assert counts.min() > 850 and counts.max() < 1150  # all 256 values, ~1000 each


@pytest.mark.parametrize("bias", [0.001, -0.01, 0.2])
def test_tilt_has_the_requested_mean(bias: float) -> None:
    p = tilted_byte_probabilities(bias)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert float(np.arange(256) @ p) == pytest.approx(127.5 * (1 + bias), rel=1e-12)


def test_biased_mock_bytes_have_the_requested_mean() -> None:
    data = np.frombuffer(
        MockUniformEntropySource(seed=1, bias=0.05).get_random_bytes(400_000), np.uint8
    )
    assert data.mean() == pytest.approx(127.5 * 1.05, abs=0.5)  # SE ≈ 0.12


def test_bias_outside_the_valid_range_is_refused() -> None:
    with pytest.raises(ValueError, match="bias"):
        tilted_byte_probabilities(MAX_ABS_BIAS + 0.01)


def test_timing_noise_is_experimental_and_varies() -> None:
    source = TimingNoiseEntropySource()
    assert source.experimental and source.health()["experimental"] is True
    first, second = source.get_random_bytes(100), source.get_random_bytes(100)
    assert len(first) == 100 and first != second


def test_registry_lists_builtins_and_builds_the_configured_source() -> None:
    assert registry.available_source_names()[:4] == [
        "system",
        "quantum_grpc",
        "mock_uniform",
        "timing_noise",
    ]
    source = build_entropy_source(
        load_settings(None, {"QR_ENTROPY_SOURCE_TYPE": "mock_uniform", "QR_MOCK_SEED": "4"})
    )
    assert isinstance(source, FallbackEntropySource)
    assert isinstance(source.primary, MockUniformEntropySource) and source.primary.seed == 4
    assert isinstance(source.fallback, SystemEntropySource)
    strict = build_entropy_source(load_settings(None, {"QR_FALLBACK_MODE": "error"}))
    assert isinstance(strict, FallbackEntropySource) and strict.fallback is None


def test_third_party_source_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real installed-distribution layout on sys.path, discovered by importlib.metadata."""
    (tmp_path / "acme_rng.py").write_text(
        textwrap.dedent("""
        from qr_sampler.entropy.base import EntropySource

        class AcmeSource(EntropySource):
            name = "acme"

            def get_random_bytes(self, n):
                return b"\\x2a" * n
    """)
    )
    dist = tmp_path / "acme_rng-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rng\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[qr_sampler.entropy_sources]\nacme = acme_rng:AcmeSource\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugin_entry_points.cache_clear()
    try:
        assert "acme" in registry.available_source_names()
        settings = load_settings(None, {"QR_ENTROPY_SOURCE_TYPE": "acme"})
        assert build_entropy_source(settings).get_random_bytes(3) == b"***"
    finally:
        sys.modules.pop("acme_rng", None)
        registry._plugin_entry_points.cache_clear()


def test_unknown_source_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="did you mean system"):
        load_settings(None, {"QR_ENTROPY_SOURCE_TYPE": "sytem"})
    with pytest.raises(SettingsError):
        registry.source_class("nope")


def test_fallback_reports_both_failures_when_both_fail() -> None:
    class Broken(SystemEntropySource):
        name = "broken"

        def get_random_bytes(self, n: int) -> bytes:
            raise EntropyUnavailableError("down")

    wrapper = FallbackEntropySource(Broken(), Broken())
    with pytest.raises(EntropyUnavailableError, match="both failed"):
        wrapper.get_random_bytes(4)


@pytest.mark.parametrize("bias", [0.001, -0.2, 0.3])
def test_alias_table_reproduces_the_tilted_probabilities_exactly(bias: float) -> None:
    from qr_sampler.entropy.mock import _alias_table

    probs = tilted_byte_probabilities(bias)
    keep, alias = _alias_table(probs)
    rebuilt = keep / 256
    np.add.at(rebuilt, alias, (1 - keep) / 256)
    np.testing.assert_allclose(rebuilt, probs, rtol=0, atol=1e-15)
