"""events_to_detect: the projection of a measured shift to the size at which a test sees it.

Definition (robustcheck.invariance_stats): the attack's shift is measured on the same events
before and after the attack; events_to_detect is the number N of events per sample at which a
test at the level ``alpha`` on two independent samples of N events (nominal and attacked)
sees a shift of that size with probability about 1/2 (chi-squared, correlations; the KS test,
whose critical distance then equals the shift, fires more often: 80% here). Here a population
with a known attack (a fraction of events moved) is measured on a large sample, projected, and
two independent samples of the projected size are drawn many times.
"""

from __future__ import annotations

import numpy as np
import pytest

from robustcheck.invariance_stats import (
    chi2_events_to_detect,
    compare,
    correlation_events_to_detect,
    correlation_variance,
    ks_critical,
    ks_events_to_detect,
)
from robustcheck.stats import chi2_homogeneity, ks_2samp

ALPHA = 0.01
REPETITIONS = 400


def attack(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Moves a random 30% of the events: feature 0 up by 0.4, feature 1 towards -feature 0."""
    out = x.copy()
    moved = rng.random(len(x)) < 0.3
    out[moved, 0] += 0.4
    out[moved, 1] -= 0.3 * x[moved, 0]
    return out


def population(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two Gaussian features with correlation 0.4."""
    z = rng.standard_normal((n, 2))
    return np.stack([z[:, 0], 0.4 * z[:, 0] + np.sqrt(1 - 0.16) * z[:, 1]], axis=1)


def measured(rng: np.random.Generator, n: int = 100_000):  # noqa: ANN201 - InvarianceFigures
    """The attack's shift measured as the check does, on the same events (paired)."""
    x = population(rng, n)
    return compare({"x": x}, {"x": attack(rng, x)}, {"x": ("f0", "f1")}, {"x": np.ones(2, bool)})


def power(fires: np.ndarray) -> float:
    return float(np.mean(fires))


def draw_pairs(rng: np.random.Generator, n: int, repetitions: int) -> tuple[np.ndarray, ...]:
    """(events, repetitions) columns of feature 0 and 1, nominal and attacked, independent."""
    nominal = population(rng, n * repetitions).reshape(n, repetitions, 2)
    attacked = attack(rng, population(rng, n * repetitions)).reshape(n, repetitions, 2)
    return nominal, attacked


def test_ks_critical_value_is_scipys() -> None:
    from scipy.stats import kstwo

    # the asymptotic critical distance at level alpha for N and N events
    d = ks_critical(ALPHA, 5000, 5000)
    assert kstwo.sf(d, 2500) == pytest.approx(ALPHA, rel=0.05)
    assert ks_events_to_detect(d, ALPHA) == pytest.approx(5000, rel=1e-9)
    assert ks_events_to_detect(0.0, ALPHA) == float("inf")


def test_ks_fires_about_half_the_time_at_events_to_detect() -> None:
    """Measured: the KS test at alpha = 0.01 fires in 80% of 400 pairs of samples of the
    projected size (N = 2,200 per sample). At N the critical distance equals the true CDF
    distance; the sample's distance is the largest of the noisy differences along the CDFs,
    and where the shift is broad the noise lifts that largest one above the true distance, so
    the KS test fires in more than half (between 1/2 and about 0.85)."""
    rng = np.random.default_rng(1)
    figures = measured(rng)
    d = figures.features[0].ks_statistic  # feature 0, the shifted one
    n = int(round(ks_events_to_detect(d, ALPHA)))
    assert 1000 < n < 20_000
    nominal, attacked = draw_pairs(rng, n, REPETITIONS)
    fired = ks_2samp(nominal[..., 0], attacked[..., 0]).pvalue < ALPHA
    assert 0.5 <= power(fired) <= 0.9, f"KS power {power(fired):.2f} at N = {n}"
    # four times as many events see it nearly always, a quarter rarely
    big_n, small_n = draw_pairs(rng, 4 * n, 100), draw_pairs(rng, n // 4, 100)
    assert power(ks_2samp(big_n[0][..., 0], big_n[1][..., 0]).pvalue < ALPHA) > 0.95
    assert power(ks_2samp(small_n[0][..., 0], small_n[1][..., 0]).pvalue < ALPHA) < 0.35


def test_chi2_fires_half_the_time_at_events_to_detect() -> None:
    """Measured: 49.5% of 400 (N = 2,489): the median of the non-central chi-squared sits at the
    critical value by construction (the binning of the larger sample kept)."""
    rng = np.random.default_rng(2)
    figures = measured(rng)
    f = figures.features[0]
    n = int(
        round(
            chi2_events_to_detect(f.chi2_statistic, f.chi2_dof, f.n_reference, f.n_attacked, ALPHA)
        )
    )
    assert 1000 < n < 20_000
    nominal, attacked = draw_pairs(rng, n, REPETITIONS)
    fired = chi2_homogeneity(nominal[..., 0], attacked[..., 0], bins=20).pvalue < ALPHA
    assert 0.38 <= power(fired) <= 0.62, f"chi2 power {power(fired):.2f} at N = {n}"


def test_correlation_test_fires_half_the_time_at_events_to_detect() -> None:
    """Measured: 47.8% of 400 (N = 1,331): the z statistic is normal, its mean at the critical
    value."""
    rng = np.random.default_rng(3)
    figures = measured(rng)
    (pair,) = figures.pairs
    n = int(round(correlation_events_to_detect(pair, ALPHA)))
    assert 500 < n < 50_000
    nominal, attacked = draw_pairs(rng, n, REPETITIONS)
    fired = []
    for r in range(REPETITIONS):
        r_a, v_a = correlation_variance(nominal[:, r])
        r_b, v_b = correlation_variance(attacked[:, r])
        z = (r_b[0, 1] - r_a[0, 1]) / np.sqrt((v_a[0, 1] + v_b[0, 1]) / n)
        fired.append(abs(z) > 2.5758293035489)  # two-sided 1%
    assert 0.38 <= power(np.array(fired)) <= 0.62, f"z power {power(np.array(fired)):.2f}"


def test_distribution_free_correlation_variance() -> None:
    """The variance of sqrt(n) r: Fisher's (1 - rho^2)^2 for Gaussians, larger for heavy
    tails, and each matches the spread of r over repeated samples."""
    rng = np.random.default_rng(4)
    n, repetitions = 400, 600
    for heavy in (False, True):
        rs, vs = [], []
        for _ in range(repetitions):
            x = population(rng, n)
            if heavy:
                x = x / np.sqrt(rng.chisquare(10, n) / 10)[:, None]  # bivariate t, 10 dof
            r, v = correlation_variance(x)
            rs.append(r[0, 1])
            vs.append(v[0, 1])
        spread = np.var(rs) * n
        assert np.median(vs) == pytest.approx(spread, rel=0.35 if heavy else 0.15)
        if not heavy:
            assert np.median(vs) == pytest.approx((1 - 0.16) ** 2, rel=0.1)
