"""The few distributions the audit report needs, written here so the report needs only numpy.

- :func:`ks_uniform`: one-sample Kolmogorov–Smirnov test against U(0, 1). The p-value is exact
  (Marsaglia, Tsang & Wang 2003: Durbin's matrix raised to the n-th power) while that matrix
  is small (n·D < 100); beyond, the limiting Kolmogorov distribution with Stephens' finite-n
  correction, accurate to about 1e-4 there.
- :func:`chi2_sf` / :func:`chi2_ppf`: through the regularised incomplete gamma function (series
  below a + 1, Lentz's continued fraction above); quantiles by bisection, or Wilson–Hilferty for
  large degrees of freedom.
- :func:`mean_ci` / :func:`sd_ci`: 95 % intervals (normal approximation for the mean, the χ²
  interval for the standard deviation, which assumes normal data: z is, under the null).

The tests compare each against scipy (a development dependency only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Two-sided 95 % normal quantile.
Z_975 = 1.959963984540054
_MTW_MAX_K = 100
_EPS = 1e-15


def ks_uniform(u: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(D, p-value) of the one-sample KS test of ``u`` against U(0, 1) (two-sided)."""
    x = np.sort(np.asarray(u, dtype=np.float64))
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    i = np.arange(1, n + 1, dtype=np.float64)
    d = float(max((i / n - x).max(), (x - (i - 1) / n).max()))
    return d, kolmogorov_sf(n, d)


def kolmogorov_sf(n: int, d: float) -> float:
    """P(D_n ≥ d) for the two-sided one-sample statistic D_n."""
    if d <= 0:
        return 1.0
    if d >= 1:
        return 0.0
    if n * d * d > 18.0:  # far tail: below 1e-15 either way
        return max(0.0, 2.0 * math.exp(-2.0 * n * d * d))
    k = int(n * d) + 1
    if k <= _MTW_MAX_K:
        return min(1.0, max(0.0, 1.0 - _mtw_cdf(n, d)))
    root = math.sqrt(n)
    return _kolmogorov_limit_sf((root + 0.12 + 0.11 / root) * d)


def _mtw_cdf(n: int, d: float) -> float:
    """P(D_n < d), Marsaglia–Tsang–Wang: the (k, k) element of H^n times n!/n^n."""
    k = int(n * d) + 1
    m = 2 * k - 1
    h = k - n * d
    i, j = np.indices((m, m))
    gap = i - j + 1
    mat = (gap >= 0).astype(np.float64)
    powers = h ** np.arange(1, m + 1, dtype=np.float64)
    mat[:, 0] -= powers
    mat[m - 1, :] -= powers[::-1]
    if 2 * h - 1 > 0:
        mat[m - 1, 0] += (2 * h - 1) ** m
    factorial = np.array([math.factorial(g) if g > 0 else 1 for g in range(m + 1)], float)
    mat = np.where(gap > 0, mat / factorial[np.clip(gap, 0, m)], mat)
    # H^n by repeated squaring, rescaling so nothing overflows; exponent kept in log space.
    result = np.eye(m)
    log_scale = 0.0
    base, base_log = mat, 0.0
    power = n
    while power:
        if power & 1:
            result = result @ base
            log_scale += base_log
            peak = np.abs(result).max()
            if peak > 1e100 or (0 < peak < 1e-100):
                result = result / peak
                log_scale += math.log(peak)
        power >>= 1
        if power:
            base = base @ base
            base_log *= 2
            peak = np.abs(base).max()
            if peak > 1e100 or (0 < peak < 1e-100):
                base = base / peak
                base_log += math.log(peak)
    value = result[k - 1, k - 1]
    if value <= 0:
        return 0.0
    log_p = math.log(value) + log_scale + math.lgamma(n + 1) - n * math.log(n)
    return min(1.0, math.exp(log_p))


def _kolmogorov_limit_sf(lam: float) -> float:
    """Q(λ) = P(K ≥ λ) of the Kolmogorov distribution, by whichever series converges fast."""
    if lam <= 0:
        return 1.0
    if lam < 1.18:  # Jacobi form: few terms for small λ
        y = math.exp(-(math.pi**2) / (8 * lam * lam))
        total = sum(y ** ((2 * j - 1) ** 2) for j in range(1, 8))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / lam * total))
    total = sum((1.0 if j % 2 else -1.0) * math.exp(-2 * j * j * lam * lam) for j in range(1, 20))
    return max(0.0, min(1.0, 2.0 * total))


# --- chi-square -------------------------------------------------------------------------------


def gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) = Γ(a, x)/Γ(a)."""
    if x <= 0:
        return 1.0
    if x < a + 1:
        return 1.0 - _gamma_p_series(a, x)
    return _gamma_q_fraction(a, x)


def _gamma_p_series(a: float, x: float) -> float:
    term = total = 1.0 / a
    denominator = a
    for _ in range(100_000):
        denominator += 1
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df ≥ x)."""
    return gamma_q(df / 2.0, x / 2.0)


def chi2_ppf(p: float, df: int) -> float:
    """The x with P(χ²_df ≤ x) = p."""
    if df > 1000:  # Wilson–Hilferty: relative error well below 1e-4 here
        z = _normal_ppf(p)
        c = 2.0 / (9.0 * df)
        return df * (1 - c + z * math.sqrt(c)) ** 3
    lo, hi = 0.0, max(1.0, df + 40.0 * math.sqrt(2.0 * df) + 100.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - chi2_sf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, mid):
            break
    return (lo + hi) / 2


def _normal_ppf(p: float) -> float:
    """Standard normal quantile by bisection on erfc (only used for a few values)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# --- intervals --------------------------------------------------------------------------------


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, lower, upper): 95 % interval, normal approximation (n ≥ 30 or so)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = Z_975 * float(values.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def sd_ci(values: np.ndarray) -> tuple[float, float, float]:
    """(sd, lower, upper): sample SD with its 95 % χ² interval."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan, math.nan
    sd = float(values.std(ddof=1))
    df = n - 1
    lower = sd * math.sqrt(df / chi2_ppf(0.975, df))
    upper = sd * math.sqrt(df / chi2_ppf(0.025, df))
    return sd, lower, upper


def decile_chi2(u: np.ndarray) -> tuple[float, float, list[int]]:
    """(χ², p-value, counts): u's counts in the ten deciles of (0, 1) against n/10 each."""
    n = len(u)
    if n == 0:
        return math.nan, math.nan, [0] * 10
    counts = np.bincount(np.minimum((np.asarray(u) * 10).astype(np.int64), 9), minlength=10)
    expected = n / 10.0
    stat = float(((counts - expected) ** 2).sum() / expected)
    return stat, chi2_sf(stat, 9), [int(c) for c in counts]
