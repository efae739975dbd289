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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Amplified:
    """Per-row results, float64 arrays of shape [rows]."""

    u: np.ndarray
    z: np.ndarray
    sample_mean: np.ndarray


def amplify(data: bytes, counts: Sequence[int], mean: np.ndarray | float,
            std: np.ndarray | float, epsilon: np.ndarray | float) -> Amplified:
    """Amplify ``data`` (rows' bytes concatenated; row i has ``counts[i]`` bytes).

    ``mean``, ``std`` and ``epsilon`` are scalars or per-row arrays.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    n = np.asarray(counts, dtype=np.float64)
    if len(counts) and all(c == counts[0] for c in counts):
        # Equal counts (the usual case): one reshape and one reduction, no offsets.
        sums = raw.reshape(len(counts), counts[0]).sum(axis=1, dtype=np.uint64)
    else:
        offsets = np.concatenate(([0], np.cumsum(counts[:-1]))).astype(np.intp)
        sums = np.add.reduceat(raw, offsets, dtype=np.uint64)
    sample_mean = sums.astype(np.float64) / n
    z = (sample_mean - mean) / (std / np.sqrt(n))
    # Φ(z) in float64; torch's ndtr is vectorized and accurate in the tails.
    u = torch.special.ndtr(torch.from_numpy(z)).numpy()
    u = np.clip(u, epsilon, 1.0 - np.asarray(epsilon))
    return Amplified(u=u, z=z, sample_mean=sample_mean)


def uniform_from_bytes(data: bytes, mean: float = 127.5, std: float | None = None,
                       epsilon: float = 1e-10) -> float:
    """Scalar reference version of :func:`amplify` for one row (pure Python, no numpy/torch)."""
    if not data:
        raise ValueError("need at least one byte")
    std = math.sqrt((256**2 - 1) / 12) if std is None else std
    z = (sum(data) / len(data) - mean) / (std / math.sqrt(len(data)))
    u = 0.5 * math.erfc(-z / math.sqrt(2.0))
    return min(max(u, epsilon), 1.0 - epsilon)
