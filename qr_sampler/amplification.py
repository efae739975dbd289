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

from qr_sampler import host_kernels
from qr_sampler.types import UNIFORM_BYTE_STD

#: Largest row length whose byte sum fits a uint32 (255 · n < 2³²): beyond it sums use int64.
_UINT32_SAFE_COUNT = (2**32 - 1) // 255
_SQRT2 = math.sqrt(2.0)
#: Rows from which one vectorised erfc beats a loop of math.erfc.
_VECTOR_ROWS = 48


@dataclass(frozen=True)
class Amplified:
    """Per-row results, float64 arrays of shape [rows]."""

    u: np.ndarray
    z: np.ndarray
    sample_mean: np.ndarray


def byte_sums(data: bytes, counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Sum of each row's bytes (int64 [rows]); rows are consecutive slices of ``data``."""
    sizes = np.asarray(counts)
    rows = len(sizes)
    raw = np.frombuffer(data, dtype=np.uint8)
    if rows and sizes.min() == sizes.max():
        width = int(sizes[0])
        # One reduction over a [rows, n] view; uint32 accumulation (exact while 255·n < 2³²)
        # is about twice as fast as int64.
        dtype = np.uint32 if width <= _UINT32_SAFE_COUNT else np.int64
        equal: np.ndarray = raw.reshape(rows, width).sum(axis=1, dtype=dtype)
        return equal.astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.intp)
    sums: np.ndarray = np.add.reduceat(raw, offsets, dtype=np.int64)
    return sums


def amplify(
    data: bytes,
    counts: Sequence[int] | np.ndarray,
    mean: np.ndarray | float,
    std: np.ndarray | float,
    epsilon: np.ndarray | float,
) -> Amplified:
    """Amplify ``data`` (rows' bytes concatenated; row i has ``counts[i]`` bytes).

    ``mean``, ``std`` and ``epsilon`` are scalars or per-row arrays.
    """
    sizes = np.asarray(counts)
    if len(data) != int(sizes.sum()):
        raise ValueError(f"got {len(data)} bytes for rows needing {int(sizes.sum())}")
    if host_kernels.ready():
        rows = len(sizes)
        m, s, e = (np.full(rows, v, dtype=np.float64) if np.ndim(v) == 0 else np.asarray(v)
                   for v in (mean, std, epsilon))  # fmt: skip
        u, z, sample_mean = host_kernels.amplify_rows(
            np.frombuffer(data, dtype=np.uint8), sizes.astype(np.int64, copy=False), m, s, e
        )
        return Amplified(u=u, z=z, sample_mean=sample_mean)
    n = sizes.astype(np.float64)
    sample_mean = byte_sums(data, sizes) / n
    z = (sample_mean - mean) / (std / np.sqrt(n))
    # Φ(z) = erfc(−z/√2)/2, accurate in both tails: one vectorised erfc (float64) for large
    # batches; below a few dozen rows a plain loop is cheaper than the tensor round trip.
    if len(z) > _VECTOR_ROWS:
        u = 0.5 * torch.special.erfc(torch.from_numpy(-z / _SQRT2)).numpy()
    else:
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
