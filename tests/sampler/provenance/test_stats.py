"""The report's distributions against scipy's (a development dependency), fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from qr_sampler.provenance.stats import (
    chi2_ppf,
    chi2_sf,
    decile_chi2,
    kolmogorov_sf,
    ks_uniform,
    mean_ci,
    sd_ci,
)


@pytest.mark.parametrize("n", [3, 25, 400, 2_500, 60_000])
@pytest.mark.parametrize("shape", [1.0, 1.05])
def test_ks_statistic_and_p_value_match_scipy(n: int, shape: float) -> None:
    u = np.random.default_rng(n).random(n) ** shape
    d, p = ks_uniform(u)
    expected = scipy_stats.kstest(u, "uniform")
    assert d == pytest.approx(expected.statistic, abs=1e-15)
    assert p == pytest.approx(expected.pvalue, rel=2e-3, abs=5e-4)


@pytest.mark.parametrize(("n", "d"), [(10, 0.5), (50, 0.3), (150, 0.2), (1000, 0.08)])
def test_exact_kolmogorov_tail(n: int, d: float) -> None:
    assert kolmogorov_sf(n, d) == pytest.approx(scipy_stats.kstwo.sf(d, n), rel=1e-6)


def test_ks_rejects_a_biased_u() -> None:
    u = np.random.default_rng(3).random(5_000) ** 1.2
    assert ks_uniform(u)[1] < 1e-6


@pytest.mark.parametrize(("x", "df"), [(0.5, 1), (3.0, 9), (20.0, 9), (100.0, 80), (5e3, 4999)])
def test_chi2_survival(x: float, df: int) -> None:
    assert chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9)


@pytest.mark.parametrize(("p", "df"), [(0.025, 9), (0.975, 99), (0.025, 999), (0.975, 50_000)])
def test_chi2_quantiles(p: float, df: int) -> None:
    assert chi2_ppf(p, df) == pytest.approx(scipy_stats.chi2.ppf(p, df), rel=1e-6)


def test_intervals_and_deciles() -> None:
    z = np.random.default_rng(5).normal(size=4_000)
    mean, lo, hi = mean_ci(z)
    assert lo < mean < hi and hi - lo == pytest.approx(2 * 1.96 * z.std(ddof=1) / 63.245, rel=1e-3)
    sd, sd_lo, sd_hi = sd_ci(z)
    n = len(z)
    assert sd_lo == pytest.approx(sd * np.sqrt((n - 1) / scipy_stats.chi2.ppf(0.975, n - 1)))
    assert sd_hi == pytest.approx(sd * np.sqrt((n - 1) / scipy_stats.chi2.ppf(0.025, n - 1)))
    u = np.random.default_rng(6).random(1_000)
    stat, p, counts = decile_chi2(u)
    expected = scipy_stats.chisquare(np.histogram(u, bins=10, range=(0, 1))[0])
    assert counts == list(np.histogram(u, bins=10, range=(0, 1))[0])
    assert stat == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
