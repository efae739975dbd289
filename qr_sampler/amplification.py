"""Turns raw entropy bytes into one uniform number per row.

For a row of N bytes with sample mean m::

    z = (m − μ) / (σ / √N)        μ = 127.5, σ = √((256² − 1) / 12) ≈ 73.9003 for fair bytes
    u = Φ(z), clamped to [ε, 1 − ε]

Under the null hypothesis (fair, independent bytes) z is approximately standard normal (the
central limit theorem at N = 20,480 is very accurate), so u is uniform on (0, 1). A source whose
byte mean drifts by δ shifts z by δ·√N/σ — the amplification that makes tiny biases visible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_sampler.types import UNIFORM_BYTE_STD

#: Largest row length whose byte sum fits an int32 (255 · n < 2³¹): beyond it sums use int64.
_INT32_SAFE_COUNT = (2**31 - 1) // 255
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Amplified:
    """Per-row results, float64 arrays of shape [rows]."""

    u: np.ndarray
    z: np.ndarray
    sample_mean: np.ndarray


def byte_sums(data: bytes, counts: Sequence[int]) -> np.ndarray:
    """Sum of each row's bytes (int64 [rows]); rows are consecutive slices of ``data``."""
    rows = len(counts)
    if rows and all(c == counts[0] for c in counts):
        with warnings.catch_warnings():
            # torch warns that ``bytes`` is read-only; we only read it.
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(data, dtype=torch.uint8)
        dtype = torch.int32 if counts[0] <= _INT32_SAFE_COUNT else torch.int64
        # One reduction over a [rows, n] view; int32 accumulation is ~2x faster than int64.
        return raw.view(rows, counts[0]).sum(dim=1, dtype=dtype).numpy().astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts[:-1]))).astype(np.intp)
    return np.add.reduceat(np.frombuffer(data, dtype=np.uint8), offsets, dtype=np.int64)


def amplify(
    data: bytes,
    counts: Sequence[int],
    mean: np.ndarray | float,
    std: np.ndarray | float,
    epsilon: np.ndarray | float,
) -> Amplified:
    """Amplify ``data`` (rows' bytes concatenated; row i has ``counts[i]`` bytes).

    ``mean``, ``std`` and ``epsilon`` are scalars or per-row arrays.
    """
    if len(data) != sum(counts):
        raise ValueError(f"got {len(data)} bytes for rows needing {sum(counts)}")
    n = np.asarray(counts, dtype=np.float64)
    sample_mean = byte_sums(data, counts) / n
    z = (sample_mean - mean) / (std / np.sqrt(n))
    # Φ(z) = erfc(−z/√2)/2, accurate in both tails. A loop over rows (not over bytes) is
    # cheaper than a tensor round trip at engine batch sizes (~0.1 µs per row).
    u = np.array([0.5 * math.erfc(-v / _SQRT2) for v in z.tolist()], dtype=np.float64)
    u = np.clip(u, epsilon, 1.0 - np.asarray(epsilon))
    return Amplified(u=u, z=z, sample_mean=sample_mean)


def uniform_from_bytes(
    data: bytes, mean: float = 127.5, std: float | None = None, epsilon: float = 1e-10
) -> float:
    """Scalar reference version of :func:`amplify` for one row, written straight from the
    definition (tests compare the two)."""
    if not data:
        raise ValueError("need at least one byte")
    std = UNIFORM_BYTE_STD if std is None else std
    z = (sum(data) / len(data) - mean) / (std / math.sqrt(len(data)))
    u = 0.5 * math.erfc(-z / _SQRT2)
    return min(max(u, epsilon), 1.0 - epsilon)
