"""Online health tests of fetched bytes: NIST SP 800-90B §4.4, the repetition count test (RCT)
and the adaptive proportion test (APT).

Why: a stuck device (all zeros, one repeated value) or a badly broken one (half of the bytes one
value) still answers every call with the right number of bytes; only a look at the bytes shows
it. These two tests are the standard's continuous tests for a noise source; they are cheap and
catch exactly these failures, not subtle bias (that is what ``qrs probe`` and offline analysis
of the archive are for).

The cutoffs follow the standard's formulas for a claimed min-entropy ``H`` bits per byte and a
false-positive probability ``α = 2^-alpha_exponent`` per test:

- RCT: ``C = 1 + ⌈-log2(α) / H⌉``; a block fails when some byte value repeats ``C`` or more times
  in a row.
- APT (non-binary samples, window ``W = 512``): ``C = 1 + CRITBINOM(W, 2^-H, 1 - α)``, the
  smallest ``k`` with ``P(Binomial(W, 2^-H) ≤ k) ≥ 1 - α``, plus one; a block fails when, in one of
  its consecutive non-overlapping 512-byte windows, the window's first byte value occurs ``C`` or
  more times (the first occurrence included). A block's last partial window is not tested.

Each block is tested on its own (no state carries over between fetches): a source stuck for a
moment fails the blocks it touches and the next good block passes again.

False alarms on healthy bytes, at the defaults (H = 7, α = 2^-40: RCT cutoff 7, APT cutoff 26),
for one 20,480-byte block of ideal uniform bytes: RCT ≈ 20,474 · 255/256 · 256^-6 ≈ 7.2e-11, APT
≈ 40 windows · P(Binomial(511, 1/256) ≥ 25) ≈ 7e-18: about one false alarm per 1.4e10 blocks.
All-zero and stuck bytes fail the RCT on any block of 7 bytes or more; bytes with one value at
probability 1/2 fail both tests on every 20,480-byte block (a false pass needs ~40 fair coin
flips to go one way, ≈ 1e-12).

Cost: vectorised numpy, no per-byte Python loop; ≈ 10–20 µs per 20,480 bytes on a CI-class core
(``benchmarks/bench_entropy_guards.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

#: APT window for non-binary (byte) samples, fixed by the standard.
APT_WINDOW = 512
#: Bytes examined per numpy pass. Large temporaries (a 640 KB batch makes several) are mapped
#: fresh from the OS on every allocation and page-fault in; 64 KB pieces stay in the allocator's
#: reused memory and in cache: 5-8 times faster on a 32-row batch. A multiple of APT_WINDOW.
_PIECE = 64 * 1024


def repetition_count_cutoff(min_entropy: float, alpha_exponent: int) -> int:
    """RCT cutoff ``1 + ⌈alpha_exponent / H⌉`` (−log2 α = alpha_exponent)."""
    if not 0 < min_entropy <= 8:
        raise ValueError("min_entropy must be in (0, 8] bits per byte")
    return 1 + math.ceil(alpha_exponent / min_entropy)


def adaptive_proportion_cutoff(min_entropy: float, alpha_exponent: int,
                               window: int = APT_WINDOW) -> int:
    """APT cutoff ``1 + CRITBINOM(window, 2^-H, 1 - 2^-alpha_exponent)``."""
    if not 0 < min_entropy <= 8:
        raise ValueError("min_entropy must be in (0, 8] bits per byte")
    return 1 + binomial_critical_value(window, 2.0 ** -min_entropy, 2.0 ** -alpha_exponent)


@cache
def binomial_critical_value(trials: int, p: float, alpha: float) -> int:
    """Smallest ``k`` with ``P(X > k) ≤ alpha`` for ``X ~ Binomial(trials, p)``.

    That is the standard's ``CRITBINOM(trials, p, 1 - alpha)``. Computed without scipy: the
    upper tail is summed from the top in floating point from log-space terms (``lgamma``), so a
    tail as small as 2^-64 is not lost to cancellation against 1.
    """
    if trials < 0 or not 0 < p < 1 or not 0 < alpha < 1:
        raise ValueError("need trials ≥ 0, 0 < p < 1 and 0 < alpha < 1")
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(trials + 1)
    tail = 0.0  # P(X > k) for the current k
    for k in range(trials, -1, -1):
        if tail > alpha:
            return k + 1
        tail += math.exp(log_n - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                         + k * log_p + (trials - k) * log_q)
    return 0


@dataclass(frozen=True)
class HealthTests:
    """Both tests with their cutoffs, computed once. ``check`` is thread-safe (no state).

    Invariants: ``rct_cutoff ≥ 2``; ``apt_cutoff ≥ 2``. A block shorter than ``rct_cutoff``
    cannot fail the RCT, one shorter than ``APT_WINDOW`` is not given to the APT.
    """

    min_entropy: float = 7.0
    alpha_exponent: int = 40
    rct_cutoff: int = 0
    apt_cutoff: int = 0

    def __post_init__(self) -> None:
        if not self.rct_cutoff:
            object.__setattr__(self, "rct_cutoff",
                               repetition_count_cutoff(self.min_entropy, self.alpha_exponent))
        if not self.apt_cutoff:
            object.__setattr__(self, "apt_cutoff",
                               adaptive_proportion_cutoff(self.min_entropy, self.alpha_exponent))

    def check(self, data: bytes) -> str:
        """"" when ``data`` passes both tests, else one sentence saying which failed and how.

        Long blocks are examined in :data:`_PIECE`-byte pieces; RCT pieces overlap by
        ``rct_cutoff - 1`` bytes so a run across a piece boundary is still seen, APT pieces
        start on window boundaries so the windows are the block's own.
        """
        block = np.frombuffer(data, dtype=np.uint8)
        overlap = self.rct_cutoff - 1
        for start in range(0, max(block.size, 1), _PIECE):
            piece = block[start:start + _PIECE + overlap]
            run = longest_run_at_least(piece, self.rct_cutoff)
            if run:
                return (f"repetition count test: the byte value {int(piece[run[0]])} repeats "
                        f"{run[1]}+ times in a row (cutoff {self.rct_cutoff}, claimed "
                        f"min-entropy {self.min_entropy:g} bits/byte)")
            worst = max_window_proportion(block[start:start + _PIECE])
            if worst is not None and worst[1] >= self.apt_cutoff:
                return (f"adaptive proportion test: the byte value {worst[0]} fills {worst[1]} "
                        f"of {APT_WINDOW} bytes in one window (cutoff {self.apt_cutoff}, "
                        f"claimed min-entropy {self.min_entropy:g} bits/byte)")
        return ""


def longest_run_at_least(block: np.ndarray, cutoff: int) -> tuple[int, int] | None:
    """``(start, length)`` of a run of ≥ ``cutoff`` equal bytes in ``block`` (uint8, 1-D), or None.

    ``length`` is the full length of that run. Vectorised: ``same[i]`` says byte i+1 equals
    byte i; a run of ``cutoff`` equal bytes is ``cutoff - 1`` consecutive True values, found by
    AND-ing shifted copies in doubling steps (O(n log cutoff), no Python loop over bytes).
    """
    need = cutoff - 1  # consecutive equal neighbours
    if need <= 0:
        return (0, 1) if block.size else None
    if block.size < cutoff:
        return None
    same = block[1:] == block[:-1]
    if int(np.count_nonzero(same)) < need:  # the common case for short blocks: nothing to find
        return None
    hits = _all_true_windows(same, need)
    if hits is None or not hits.any():
        return None
    start = int(np.argmax(hits))
    # The run's full length: extend while neighbours stay equal (one vector op, not a loop).
    rest = same[start:]
    breaks = np.flatnonzero(~rest)
    length = (int(breaks[0]) if breaks.size else rest.size) + 1
    return start, length


def _all_true_windows(flags: np.ndarray, width: int) -> np.ndarray | None:
    """``out[i]`` = all of ``flags[i : i + width]`` (length ``len(flags) - width + 1``), or None
    when no such window exists.

    Doubling: ``span_k`` covers 2^k flags; the bits of ``width`` pick which spans to AND. A
    span level without a single True ends the search early: for healthy bytes already the
    second level (three equal bytes in a row: about one in 65,536 positions) is empty.
    """
    acc: np.ndarray | None = None
    covered = 0
    span, span_len = flags, 1
    remaining = width
    while remaining:
        if remaining & 1:
            if acc is None:
                acc, covered = span, span_len
            else:
                keep = acc.size - span_len
                acc = acc[:keep] & span[covered:covered + keep]
                covered += span_len
        remaining >>= 1
        if remaining:
            span = span[:-span_len] & span[span_len:]
            span_len *= 2
            if not span.any():
                return None
    assert acc is not None  # width ≥ 1
    return acc[: flags.size - width + 1]


def max_window_proportion(block: np.ndarray) -> tuple[int, int] | None:
    """``(value, count)`` for the APT window whose first byte recurs most, None if no window.

    ``count`` includes the first byte itself, as the standard counts ``B``. The boolean matrix
    is summed as packed 64-bit words (8 flags per word; no lane can overflow: a lane sums 64
    flags at most), which is about twice as fast as summing booleans one by one.
    """
    windows = block.size // APT_WINDOW
    if not windows:
        return None
    grid = block[: windows * APT_WINDOW].reshape(windows, APT_WINDOW)
    equal = grid == grid[:, :1]
    lanes = equal.view(np.uint64).sum(axis=1, dtype=np.uint64)  # per row: 8 byte-lanes of sums
    counts = lanes.view(np.uint8).reshape(windows, 8).sum(axis=1, dtype=np.int64)
    worst = int(np.argmax(counts))
    return int(grid[worst, 0]), int(counts[worst])
