"""Fused host kernels for the bounded group on a CPU: one compiled pass per row.

On the host, the float64 filters over each row's k candidates (min-p, top-p, the greedy
override, the cdf) and the choice by u cost about 20 tensor operations in
:mod:`qr_sampler.selection`, each 5–30 µs of fixed cost however small the rows. These kernels do
the same per row in one loop, compiled by numba (a dependency of vLLM, so present wherever the
plugin runs): at batch 256 × k 50, about 0.8 ms of tensor operations becomes about 40 µs. The
softmax stays a tensor operation (vectorised exp; a scalar exp per candidate costs more).

Same definitions as the tensor path, which stays the path on accelerators and is tested against
these kernels (``tests/sampler/test_host_kernels.py``): the results agree to float64 rounding.

Without numba, or with ``QR_HOST_KERNELS=false`` (the engine sets :data:`ENABLED` from it),
:func:`ready` is False and the tensor path serves the host as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

_SQRT2 = math.sqrt(2.0)

#: False forces the tensor path on the host (``QR_HOST_KERNELS``; tests compare the two).
ENABLED = True


def ready() -> bool:
    """Whether the compiled kernels can serve this process."""
    return ENABLED and _kernels() is not None


def filter_rows(
    probs: np.ndarray, min_p: np.ndarray, top_p_cut: np.ndarray, greedy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply min-p then top-p to softmax rows (float64 [R, K], descending), renormalizing
    after each, in place; greedy rows become one-hot on their first candidate. Returns the
    cdf (float64 [R, K]) and the kept count (int64 [R], at least 1).

    Per row: ``min_p`` (0 = off), ``top_p_cut`` (+inf = off), ``greedy``. A NaN row (no finite
    candidate) stays NaN, as in the tensor path.
    """
    kernels = _kernels()
    assert kernels is not None
    rows, width = probs.shape
    cdf = np.empty((rows, width), dtype=np.float64)
    kept = np.empty(rows, dtype=np.int64)
    kernels[0](probs, _f64(min_p), _f64(top_p_cut), _c(greedy, np.bool_), cdf, kept)
    return cdf, kept


def choose(
    cdf: np.ndarray,
    num_kept: np.ndarray,
    token_ids: np.ndarray,
    probs: np.ndarray,
    top_logit: np.ndarray,
    u: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the first candidate whose cdf is ≥ u (within the kept prefix): its token id
    (-1 where ``top_logit`` is not finite), its rank and its probability."""
    kernels = _kernels()
    assert kernels is not None
    rows = cdf.shape[0]
    tokens = np.empty(rows, dtype=np.int64)
    ranks = np.empty(rows, dtype=np.int64)
    chosen = np.empty(rows, dtype=np.float64)
    # token_ids as it is: the full-vocabulary group's is a column slice of a wide sort, too
    # large to copy (the kernel reads one element per row; warm_up compiles both layouts).
    kernels[1](_f64(cdf), _c(num_kept, np.int64), token_ids.astype(np.int64, copy=False),
               _f64(probs), _f64(top_logit), _f64(u), tokens, ranks, chosen)  # fmt: skip
    return tokens, ranks, chosen


def amplify_rows(
    raw: np.ndarray, sizes: np.ndarray, mean: np.ndarray, std: np.ndarray, epsilon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u, z and the sample mean per row (float64 [R]) of ``raw`` (uint8, rows' bytes one after
    another; row i has ``sizes[i]``), by the formulas of :mod:`qr_sampler.amplification`, in
    one pass over the bytes."""
    kernels = _kernels()
    assert kernels is not None
    rows = len(sizes)
    u, z, sample_mean = np.empty(rows), np.empty(rows), np.empty(rows)
    kernels[2](_c(raw, np.uint8), _c(sizes, np.int64), _f64(mean), _f64(std), _f64(epsilon),
               u, z, sample_mean)  # fmt: skip
    return u, z, sample_mean


def warm_up() -> None:
    """Compile (or load from numba's cache) before the first step needs the kernels: about
    3 s the first time on a 2-core host, about 0.3 s from the cache after numba's import."""
    if not ready():
        return
    probs = np.array([[0.7, 0.3], [np.nan, np.nan]])
    cdf, kept = filter_rows(probs, np.zeros(2), np.full(2, 0.9), np.zeros(2, dtype=bool))
    for token_ids in (np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64)[:, :2]):
        choose(cdf, kept, token_ids, probs, np.array([2.0, np.nan]), np.ones(2))
    population = np.full(2, 127.5), np.full(2, 73.9), np.full(2, 1e-10)
    # Bytes arrive read-only (np.frombuffer over bytes): numba types those apart.
    amplify_rows(np.frombuffer(b"abc", np.uint8), np.array([1, 2], np.int64), *population)


def _c(array: Any, dtype: Any) -> np.ndarray:
    """C-contiguous, of ``dtype`` (no copy when it already is): one compiled type per kernel."""
    return np.ascontiguousarray(array, dtype=dtype)


def _f64(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float64)


@cache
def _kernels() -> tuple[Callable[..., Any], ...] | None:
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(nogil=True, cache=True)
    return jit(_filter_rows), jit(_choose_rows), jit(_amplify_rows)


# --- the kernels (plain Python here; numba compiles them) --------------------------------------


def _filter_rows(probs, min_p, top_p_cut, greedy, cdf, kept):  # type: ignore[no-untyped-def]
    rows, width = probs.shape
    for r in range(rows):
        if greedy[r]:
            probs[r, :] = 0.0
            probs[r, 0] = 1.0
        elif probs[r, 0] == probs[r, 0]:  # not a NaN row
            if min_p[r] > 0.0:
                floor = min_p[r] * probs[r, 0]
                total = 0.0
                for j in range(width):
                    if probs[r, j] < floor:
                        probs[r, j] = 0.0
                    total += probs[r, j]
                for j in range(width):
                    probs[r, j] /= total
            if top_p_cut[r] < math.inf:
                # Keep while the mass before a candidate is below p (the first always); the
                # mass is summed as a running total, the way a cumulative sum does.
                running = 0.0
                total = 0.0
                for j in range(width):
                    after = running + probs[r, j]
                    if after - probs[r, j] >= top_p_cut[r]:
                        probs[r, j] = 0.0
                    total += probs[r, j]
                    running = after
                for j in range(width):
                    probs[r, j] /= total
        running = 0.0
        nonzero = 0
        for j in range(width):
            running += probs[r, j]
            cdf[r, j] = running
            if probs[r, j] != 0.0:  # NaN counts, as in count_nonzero
                nonzero += 1
        kept[r] = max(nonzero, 1)


def _choose_rows(cdf, num_kept, token_ids, probs, top_logit, u, tokens, ranks, chosen):  # type: ignore[no-untyped-def]
    rows, width = cdf.shape
    for r in range(rows):
        low, high = 0, width  # the first position with cdf ≥ u (a left binary search)
        while low < high:
            middle = (low + high) // 2
            if cdf[r, middle] < u[r]:
                low = middle + 1
            else:
                high = middle
        # Rounding can leave the last cdf a hair below u: clamp to the last kept candidate.
        position = min(low, num_kept[r] - 1)
        ranks[r] = position
        chosen[r] = probs[r, position]
        valid = -math.inf < top_logit[r] < math.inf
        tokens[r] = token_ids[r, position] if valid else -1


def _amplify_rows(raw, sizes, mean, std, epsilon, u, z, sample_mean):  # type: ignore[no-untyped-def]
    start = 0
    for r in range(len(sizes)):
        n = sizes[r]
        if n <= 0:  # no bytes, no mean (as 0 / 0 gives in numpy)
            u[r] = z[r] = sample_mean[r] = math.nan
            continue
        total = raw[start : start + n].sum()  # numba's sum vectorises; exact in 64 bits
        start += n
        sample_mean[r] = total / n
        z[r] = (sample_mean[r] - mean[r]) / (std[r] / math.sqrt(n))
        u[r] = min(max(0.5 * math.erfc(-z[r] / _SQRT2), epsilon[r]), 1.0 - epsilon[r])
