"""Compiled host kernels for the sampler's per-row work on a CPU, one pass per row each.

**Top-k** (:func:`top_k`, large vocabularies). torch takes each block's maximum in one read
pass over the logits (both OpenMP threads; the pass is bound by memory). Then, per row:

1. t = the k-th largest block maximum: the smallest of the maxima of k groups of blocks
   bounds it from below, and a partition of the few maxima above that bound finds it;
2. the tokens ≥ t of the (about k) blocks whose maximum is ≥ t are the candidates, typically
   a few more than k (k distinct tokens are ≥ t, so no token below t is among the k best);
3. those few are sorted by their order key.

This replaces two ``topk`` and two gathers of the tensor path. A row with a NaN or with more
candidates than the buffer (heavy ties) takes :func:`_k_best`, one pass against a running
threshold. Vocabularies too small for block pruning take :func:`direct_top_k`: one pass bins
each token by the top bits of its order, and only the tokens of the top bins are sorted.
Both run their rows on torch's OpenMP team (:mod:`qr_sampler.omp_team`) where there is one.

**The order**, on every path and device (``selection.order_keys`` on tensors): larger value
first, NaN (either sign) first of all, equal values (−0 = +0) by the lower token id.

**Filters and choice.** On the host, the float64 filters over each row's k candidates (min-p,
top-p, the greedy override, the cdf) and the choice by u cost about 20 tensor operations in
:mod:`qr_sampler.selection`, each 5–30 µs of fixed cost however small the rows. These kernels do
the same per row in one loop, compiled by numba (a dependency of vLLM, so present wherever the
plugin runs): at batch 256 × k 50, about 0.8 ms of tensor operations becomes about 40 µs. The
softmax (:func:`softmax_rows`) runs here too: torch's, even over 32 × 50, opens an OpenMP
parallel region that waits for a worker the step's fetch thread may be keeping off its core.

Same definitions as the tensor path, which stays the path on accelerators and is tested against
these kernels (``tests/sampler/test_host_kernels.py``): the results agree to float64 rounding.

Without numba, or with ``QR_HOST_KERNELS=false`` (the engine sets :data:`ENABLED` from it),
:func:`ready` is False and the tensor path serves the host as well.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import cache
from typing import Any

import numpy as np

from qr_sampler import omp_team
from qr_sampler.helper_threads import HelperPool, usable_cores

logger = logging.getLogger("qr_sampler")
_SQRT2 = math.sqrt(2.0)
_FLOAT64_MAX = float(np.finfo(np.float64).max)

#: False forces the tensor path on the host (``QR_HOST_KERNELS``; tests compare the two).
ENABLED = True
#: Without torch's OpenMP team (:mod:`qr_sampler.omp_team`), rows from which helper threads
#: take chunks of a top-k's rows: measured in a real step on 2 cores, they made batch 32 slower
#: (they compete with torch's spinning OpenMP workers) and batch 256 faster.
SPLIT_FROM_ROWS = 64
_row_helpers = HelperPool(usable_cores() - 1, "qr-sampler-topk")
#: Elements per threshold test in the one-pass top-k (1 KiB of float32), and per second-level
#: test inside a chunk that passed.
_CHUNK = 256
_SUB = 32


def ready() -> bool:
    """Whether the compiled kernels can serve this process."""
    return ENABLED and _kernels() is not None


def top_k(
    logits: np.ndarray, block_max: np.ndarray, block: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits of each row of ``logits`` (float32 [R, V], rows contiguous,
    1 ≤ k ≤ number of blocks), in the order of the module docstring: values float32 [R, k],
    token ids int64 [R, k]. Exact; rows with fewer than k values above -inf are completed with
    their -inf tokens, lowest ids first. ``block_max`` (float32 [R, ceil(V / block)]): the
    maxima of each row's consecutive blocks of ``block`` tokens (the last may be shorter), NaN
    propagated."""
    kernels = _kernels()
    assert kernels is not None
    rows = logits.shape[0]
    values = np.empty((rows, k), dtype=np.float32)
    ids = np.empty((rows, k), dtype=np.int64)
    block_max = np.ascontiguousarray(block_max)
    if _on_team(logits, block_max, block, k, values, ids):
        return values, ids
    if rows < SPLIT_FROM_ROWS:
        kernels[3](logits, block_max, block, k, values, ids, 0, rows)
        return values, ids
    # Rows in chunks, taken in turn by this thread and the helpers (torch's idle OpenMP workers
    # spin for milliseconds after each parallel operation: a helper may get little of its core).
    chunk = max(1, rows // (4 * (_row_helpers.workers + 1)))

    def scan(i: int) -> None:
        start = i * chunk
        kernels[3](logits, block_max, block, k, values, ids, start, min(start + chunk, rows))

    _row_helpers.share(-(-rows // chunk), scan)
    return values, ids


def direct_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of all tokens of each row of ``logits`` (float32 [R, V], C-contiguous,
    1 ≤ k ≤ V), in the module's order, as :func:`top_k` returns them: for vocabularies too
    small for block pruning (:func:`_direct_rows`). On torch's team where there is one."""
    kernels = _kernels()
    assert kernels is not None
    rows = logits.shape[0]
    values = np.empty((rows, k), dtype=np.float32)
    ids = np.empty((rows, k), dtype=np.int64)
    if not _on_team(logits, None, 0, k, values, ids):
        kernels[4](logits, k, values, ids, 0, rows)
    return values, ids


def _on_team(logits: np.ndarray, block_max: np.ndarray | None, block: int, k: int,
             values: np.ndarray, ids: np.ndarray) -> bool:  # fmt: skip
    """Run a top-k's rows on torch's team (:func:`_rows_task`): the block kernel from
    ``block_max``, or with None the direct one. False where there is no team to run them."""
    rows = logits.shape[0]
    team = omp_team.team() if rows > 1 and logits.flags.c_contiguous else None
    task = _team_task() if team is not None else None
    if team is None or task is None:
        return False
    params = np.zeros(_TASK_SLOTS, dtype=np.int64)
    params[:_T_NEXT] = (logits.ctypes.data, rows, logits.shape[1],
                        0 if block_max is None else block_max.ctypes.data,
                        0 if block_max is None else block_max.shape[1], block, k,
                        values.ctypes.data, ids.ctypes.data,
                        max(1, rows // (4 * team.threads)), block_max is None)  # fmt: skip
    team.run(task.address, params)
    return True


def softmax_rows(values: np.ndarray, inv_temperature: np.ndarray, row_k: np.ndarray) -> np.ndarray:
    """softmax(values · inv_temperature) per row, float64 [R, K], as the tensor path computes
    it: ``values`` [R, K] (float32 or float64) sorted descending; positions from ``row_k[r]``
    on, and NaN, count as -inf; +inf as the largest float64. A row with nothing finite is NaN."""
    kernels = _kernels()
    assert kernels is not None
    probs = np.empty(values.shape, dtype=np.float64)
    kernels[5](np.ascontiguousarray(values), _f64(inv_temperature), _c(row_k, np.int64), probs)
    return probs


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
    6 s the first time on a 2-core host, about 0.5 s from the cache after numba's import."""
    if not ready():
        return
    if omp_team.team() is not None:
        _team_task()
    probs = softmax_rows(np.array([[1.0, 0.5], [-np.inf, np.nan]], dtype=np.float32),
                         np.ones(2), np.full(2, 2))  # fmt: skip
    cdf, kept = filter_rows(probs, np.zeros(2), np.full(2, 0.9), np.zeros(2, dtype=bool))
    for token_ids in (np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64)[:, :2]):
        choose(cdf, kept, token_ids, probs, np.array([2.0, np.nan]), np.ones(2))
    row = np.array([[1.0, np.nan, -np.inf, 0.5]], dtype=np.float32)
    top_k(row, np.array([[np.nan, 0.5]], dtype=np.float32), 2, 1)
    top_k(row, np.array([[1.0, 0.5]], dtype=np.float32), 2, 1)
    direct_top_k(row, 2)
    population = np.full(2, 127.5), np.full(2, 73.9), np.full(2, 1e-10)
    # Bytes arrive read-only (np.frombuffer over bytes): numba types those apart.
    amplify_rows(np.frombuffer(b"abc", np.uint8), np.array([1, 2], np.int64), *population)


def _c(array: Any, dtype: Any) -> np.ndarray:
    """C-contiguous, of ``dtype`` (no copy when it already is): one compiled type per kernel."""
    return np.ascontiguousarray(array, dtype=dtype)


def _f64(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float64)


_compile_lock = threading.Lock()
#: The kernels' helpers (name, inlined), compiled before the kernels that call them.
_HELPERS = (("_any_above", True), ("_order_key", True),
            ("_k_best", False), ("_scan_row", False), ("_block_candidates", False),
            ("_emit", False), ("_top_k_blocks", False), ("_direct_rows", False))  # fmt: skip
#: numba's carray and :mod:`qr_sampler.numba_ext`'s intrinsics, which the team's task calls:
#: set when the kernels compile (numba is optional).
_carray: Any = None
_pointer: Any = None
_take_next: Any = None


@cache
def _kernels() -> tuple[Any, ...] | None:
    try:
        import numba

        from qr_sampler import numba_ext
    except ImportError:
        return None
    with _compile_lock:
        globals().update(_carray=numba.carray, _pointer=numba_ext.pointer,
                         _take_next=numba_ext.take_next)  # fmt: skip
        # The top-k kernels call these helpers, which numba resolves as this module's globals
        # when it compiles a kernel: they are replaced by their compiled forms first. Once: two
        # threads may both get here on the first step (functools.cache does not lock), and the
        # second finds them compiled.
        for name, inline in _HELPERS:
            helper = globals()[name]
            if not hasattr(helper, "py_func"):
                options = {"inline": "always"} if inline else {"nogil": True}
                globals()[name] = numba.njit(cache=True, **options)(helper)
    jit = numba.njit(nogil=True, cache=True)
    return (jit(_filter_rows), jit(_choose_rows), jit(_amplify_rows), _top_k_blocks,
            _direct_rows, jit(_softmax_rows))  # fmt: skip


@cache
def _team_task() -> Any:
    """:func:`_rows_task` compiled as a C function for torch's team, or None where it cannot
    be (then the rows stay on this thread and the helpers: slower, same result)."""
    kernels = _kernels()
    if kernels is None:
        return None
    try:
        import numba

        task = numba.cfunc(numba.types.void(numba.types.voidptr), cache=True,
                           error_model="numpy")  # fmt: skip
        return task(_rows_task)
    except Exception as exc:  # an unexpected numba: keep serving without the team
        logger.warning("qr_sampler: the top-k stays off torch's threads (%s: %s)",
                       type(exc).__name__, exc)  # fmt: skip
        return None


# --- the kernels (plain Python here; numba compiles them) --------------------------------------


# Slots of the team task's int64 parameters.
_T_LOGITS, _T_ROWS, _T_VOCAB, _T_MAXIMA, _T_BLOCKS, _T_WIDTH, _T_K, _T_VALUES = range(8)
_T_IDS, _T_CHUNK, _T_DIRECT, _T_NEXT = range(8, 12)
_TASK_SLOTS = 12


def _rows_task(data: Any) -> None:
    """A top-k's rows on a team's thread (a C callback), in chunks taken in turn: by
    :func:`_top_k_blocks`, or with ``_T_DIRECT`` set by :func:`_direct_rows`."""
    p = _carray(data, _TASK_SLOTS, np.int64)
    rows, k, chunk = p[_T_ROWS], p[_T_K], p[_T_CHUNK]
    logits = _carray(_pointer(p[_T_LOGITS]), (rows, p[_T_VOCAB]), np.float32)
    values = _carray(_pointer(p[_T_VALUES]), (rows, k), np.float32)
    ids = _carray(_pointer(p[_T_IDS]), (rows, k), np.int64)
    direct = p[_T_DIRECT] != 0
    maxima = _carray(_pointer(p[_T_MAXIMA]), (0 if direct else rows, p[_T_BLOCKS]), np.float32)
    while True:
        start = _take_next(data, _T_NEXT) * chunk
        if start >= rows:
            return
        stop = min(start + chunk, rows)
        if direct:
            _direct_rows(logits, k, values, ids, start, stop)
        else:
            _top_k_blocks(logits, maxima, p[_T_WIDTH], k, values, ids, start, stop)


def _direct_rows(logits: Any, k: Any, values: Any, ids: Any, start: Any, stop: Any) -> None:
    """The k best of every token, rows ``start``..``stop``: one pass puts each token in one of
    2,048 bins by the top 11 bits of its order (quarter-octave bins) and counts them; the bins
    from the top down to the one that holds the k-th best hold every token of the k best, so
    only those are keyed and sorted (at vocabulary 1,024 and k 50 typically a hundred or two;
    a row of heavy ties keys more, bounded by the row)."""
    vocab = logits.shape[1]
    counts = np.empty(2048, dtype=np.int32)
    bins = np.empty(vocab, dtype=np.int16)
    keys = np.empty(vocab, dtype=np.int64)
    for r in range(start, stop):
        row = logits[r]
        bits = row.view(np.int32)
        counts[:] = 0
        for j in range(vocab):
            b = (_order_key(bits[j], 0, 1) >> 53) + 1024  # the key's top 11 bits, 0..2047
            bins[j] = b
            counts[b] += 1
        lowest = 2047
        total = counts[lowest]
        while total < k:
            lowest -= 1
            total += counts[lowest]
        n = 0
        for j in range(vocab):
            if bins[j] >= lowest:
                keys[n] = _order_key(bits[j], j, vocab)
                n += 1
        _emit(row, keys, n, k, values[r], ids[r])


def _top_k_blocks(logits: Any, block_max: Any, width: Any, k: Any, values: Any, ids: Any,
                  start: Any, stop: Any) -> None:
    blocks = block_max.shape[1]
    capacity = 16 * k + 1024
    keys = np.empty(capacity, dtype=np.int64)
    buffer = np.empty(4 * k + _CHUNK, dtype=np.int64)
    best = np.empty(k, dtype=np.int64)
    tops = np.empty(blocks, dtype=np.float32)
    picked = np.empty(blocks, dtype=np.int64)
    for r in range(start, stop):
        row = logits[r]
        n = _block_candidates(row, block_max[r], k, width, tops, picked, keys)
        if n < 0:  # a NaN, or many ties: the one-pass scan of the row
            _scan_row(row, k, buffer, best, values[r], ids[r])
            continue
        _emit(row, keys, n, k, values[r], ids[r])


def _block_candidates(row: Any, maxima: Any, k: Any, width: Any, tops: Any, picked: Any,
                      keys: Any) -> Any:
    """Order keys of the tokens that can be among the row's k best, from its blocks' maxima:
    with t the k-th largest maximum, k distinct tokens are ≥ t, so the candidates are the
    tokens ≥ t, all in the (about k) blocks whose maximum is ≥ t. -1: a NaN, or more
    candidates than ``keys`` holds. Every loop here is a plain pass over a small array, or a
    fixed-width one over a picked block, which the compiler vectorises."""
    vocab = len(row)
    blocks = len(maxima)
    nans = 0
    for b in range(blocks):
        nans += maxima[b] != maxima[b]
    if nans:
        return -1
    # A lower bound on t: split the maxima into k groups; the smallest group maximum is ≤ t
    # (each group holds a value ≥ it). Then t exactly, by a partition of the maxima ≥ it.
    size = blocks // k
    bound = np.float32(np.inf)
    for g in range(k):
        top = maxima[g * size]
        for b in range(g * size + 1, g * size + size):
            top = maxima[b] if maxima[b] > top else top
        bound = top if top < bound else bound
    m = 0
    for b in range(blocks):
        if maxima[b] >= bound:
            picked[m] = b
            m += 1
    for i in range(m):
        tops[i] = maxima[picked[i]]
    threshold = np.partition(tops[:m], m - k)[m - k]
    below = (threshold if threshold == -np.inf
             else np.nextafter(threshold, np.float32(-np.inf)))  # fmt: skip
    chosen = 0
    for i in range(m):  # the blocks that can hold a candidate, about k of them
        if tops[i] > below:
            picked[chosen] = picked[i]
            chosen += 1
    # The picked blocks are scattered over the row, which the maxima pass has long left: each
    # read misses the caches and, on a VM, the TLB. Touching them all first, in one loop of
    # independent loads, lets those misses overlap (about 20 % of this kernel, measured).
    bits = row.view(np.int32)
    touched = np.int32(0)
    for i in range(chosen):
        start = picked[i] * width
        for j in range(start, min(start + width, vocab), 16):  # one load per cache line
            touched |= bits[j]
    tops[0] = touched  # used, so the loop stays; tops is scratch from here on
    # Most of them hold one candidate (their maximum): one fixed-width pass counts the block's
    # tokens above and sums their positions, which is the position when it is one.
    n = 0
    for i in range(chosen):
        start = picked[i] * width
        if start + width <= vocab:
            count = np.int32(0)
            position = np.int32(0)
            for j in range(width):
                hit = np.int32(row[start + j] > below)
                count += hit
                position += hit * np.int32(j)
            if count == 1 and n < len(keys):
                keys[n] = start + position
                n += 1
                continue
        stop = min(start + width, vocab)
        if n + stop - start > len(keys):
            return -1
        for j in range(start, stop):  # branch-free: every position written, the kept counted
            keys[n] = j
            n += row[j] > below
    for i in range(n):
        j = keys[i]
        keys[i] = _order_key(bits[j], j, vocab)
    return n


def _emit(row: Any, keys: Any, n: Any, k: Any, values: Any, ids: Any) -> None:
    """The k best of the ``n`` candidates' keys into ``values``/``ids``, completed with the
    row's -inf tokens, lowest ids first, when fewer than k are finite."""
    vocab = len(row)
    if n > 4 * k:  # many candidates (ties, or a direct top-k): the k best first
        keys[:k] = np.partition(keys[:n], n - k)[n - k :]
        n = k
    ordered = np.sort(keys[:n])
    found = min(k, n)
    for i in range(found):
        j = vocab - 1 - (ordered[n - 1 - i] & 0xFFFFFFFF)
        ids[i] = j
        values[i] = row[j]
    j = 0
    for i in range(found, k):
        while row[j] != -np.inf:
            j += 1
        ids[i] = j
        values[i] = row[j]
        j += 1


def _scan_row(row: Any, k: Any, buffer: Any, best: Any, values: Any, ids: Any) -> None:
    """The row's k best by :func:`_k_best`, into ``values`` and ``ids`` (the row's outputs)."""
    _k_best(row, k, buffer, best)
    for i in range(k):
        ids[i] = best[i]
        values[i] = row[best[i]]


def _k_best(row: Any, k: Any, buffer: Any, best: Any) -> None:
    """Positions of the ``k`` best values of ``row`` (1 ≤ k ≤ len(row)) into ``best``, best
    first, in the module's order with the position as the id: one pass against a running
    threshold (the k-th best so far), ``buffer`` (more than k) holding the candidates."""
    length = len(row)
    capacity = len(buffer)
    bits = row.view(np.int32)
    threshold = np.float32(-np.inf)
    n = 0
    for lo in range(0, length, _CHUNK):
        if not _any_above(row, lo, _CHUNK, threshold):
            continue
        for sub in range(lo, min(lo + _CHUNK, length), _SUB):
            if not _any_above(row, sub, _SUB, threshold):
                continue
            for j in range(sub, min(sub + _SUB, length)):
                if row[j] <= threshold:
                    continue
                if n == capacity:  # keep the k best; the k-th becomes the threshold
                    kept = np.partition(buffer, capacity - k)
                    buffer[:k] = kept[capacity - k :]
                    n = k
                    threshold = row[length - 1 - (kept[capacity - k] & 0xFFFFFFFF)]
                    if row[j] <= threshold:
                        continue
                buffer[n] = _order_key(bits[j], j, length)
                n += 1
    ordered = np.sort(buffer[:n])
    found = min(k, n)
    for i in range(found):
        best[i] = length - 1 - (ordered[n - 1 - i] & 0xFFFFFFFF)
    j = 0
    for i in range(found, k):  # -inf never passes the threshold: complete in id order
        while row[j] != -np.inf:
            j += 1
        best[i] = j
        j += 1


def _any_above(row: Any, lo: Any, width: Any, threshold: Any) -> Any:
    """Whether ``row[lo : lo + width]`` holds a value above ``threshold`` or a NaN."""
    segment = row[lo : lo + width]
    above = np.uint8(0)
    if len(segment) == width:  # a constant trip count: vectorised compares
        for j in range(width):
            above |= np.uint8(not (segment[j] <= threshold))
    else:
        for j in range(len(segment)):
            above |= np.uint8(not (segment[j] <= threshold))
    return above != 0


def _order_key(v: Any, j: Any, vocab: Any) -> Any:
    """The order of the module docstring as one int64: the value's orderable bits high, the
    token id reversed low (``v``: the float32's bits as int32)."""
    magnitude = v & 0x7FFFFFFF
    if magnitude > 0x7F800000:  # NaN, either sign: the largest
        key = np.int64(0x7FFFFFFF)
    elif magnitude == 0:  # −0 = +0
        key = np.int64(0)
    else:  # negative floats: the order of their bits reversed
        key = np.int64(v ^ ((v >> 31) & 0x7FFFFFFF))
    return (key << 32) | (vocab - 1 - j)


def _softmax_rows(values: Any, inv_temperature: Any, row_k: Any, probs: Any) -> None:
    rows, width = values.shape
    for r in range(rows):
        top = -math.inf
        for j in range(width):
            x = values[r, j] * inv_temperature[r] if j < row_k[r] else -math.inf
            if math.isnan(x):
                x = -math.inf
            elif x == math.inf:
                x = _FLOAT64_MAX
            probs[r, j] = x
            top = max(top, x)
        total = 0.0
        for j in range(width):
            probs[r, j] = math.exp(probs[r, j] - top)  # NaN when nothing is finite
            total += probs[r, j]
        for j in range(width):
            probs[r, j] /= total


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
