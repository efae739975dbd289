"""A seeded pseudo-random source for tests and bias experiments.

Unbiased, every byte value 0..255 is equally likely (numpy's PCG64 ``integers``), so the sampler's
u is uniform under the null hypothesis. With ``bias`` ≠ 0 byte values are drawn from a linear tilt
``w(v) ∝ 1 + c·(v − 127.5)``, chosen so the expected byte mean is ``127.5 · (1 + bias)``: a
controlled, known deviation for studying whether small biases show up in model output.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

_CENTER = 127.5
#: Sum over v in 0..255 of (v − 127.5)²; the tilt slope c moves the mean by c · this / 256.
_SQUARED_DEVIATIONS = float(sum((v - _CENTER) ** 2 for v in range(256)))
#: Largest |bias| that keeps every tilted weight non-negative.
MAX_ABS_BIAS = _SQUARED_DEVIATIONS / 256 / _CENTER**2


def tilted_byte_probabilities(bias: float) -> np.ndarray:
    """Probabilities of byte values 0..255 whose mean is 127.5 · (1 + bias)."""
    if abs(bias) > MAX_ABS_BIAS:
        raise ValueError(f"|bias| must be ≤ {MAX_ABS_BIAS:.3f}")
    slope = _CENTER * bias * 256 / _SQUARED_DEVIATIONS
    weights = 1.0 + slope * (np.arange(256) - _CENTER)
    return np.asarray(weights / weights.sum())


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias tables for sampling byte values with ``probs`` in O(1) per byte."""
    size = len(probs)
    scaled = probs * size
    keep_prob = np.ones(size)
    alias = np.arange(size, dtype=np.uint8)
    small = [i for i in range(size) if scaled[i] < 1.0]
    large = [i for i in range(size) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep_prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return keep_prob, alias


class MockUniformEntropySource(EntropySource):
    """Seeded bytes: the same seed gives the same byte stream, call after call."""

    name = "mock_uniform"
    health_tested = False  # generator output: the tests cannot fail it

    def __init__(self, seed: int | None = None, bias: float = 0.0) -> None:
        self.seed = seed
        self.bias = bias
        self._rng = np.random.default_rng(seed)
        self._alias = _alias_table(tilted_byte_probabilities(bias)) if bias else None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MockUniformEntropySource:
        return cls(seed=settings.mock_seed, bias=settings.mock_bias)

    def get_random_bytes(self, n: int) -> bytes:
        if n < 1:
            raise EntropyUnavailableError(f"asked for {n} bytes; need at least 1")
        with self._lock:
            if self._alias is None:
                return self._rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            # Walker's alias method: a uniform column, then keep it or take its alias.
            keep_prob, alias = self._alias
            column = self._rng.integers(0, 256, size=n, dtype=np.uint8)
            coin = self._rng.random(n)
        return np.where(coin < keep_prob[column], column, alias[column]).astype(np.uint8).tobytes()

    def health(self) -> dict[str, Any]:
        return {**super().health(), "seeded": self.seed is not None, "bias": self.bias}
