"""The invariance check's p-value thresholds bound the false-alarm rate of the whole check.

Holm-Bonferroni adjustment against a loop written from its definition, the check's decision on
seeded null samples (two independent samples of one distribution), and the uncorrected
per-test rule that false-alarms on about one unchanged sample in six with 10 features.
benchmarks/invariance_calibration.py runs the same study with more repetitions.
"""

from __future__ import annotations

import numpy as np
import pytest

from robustcheck import stats
from robustcheck.checks.invariance import pvalue_tests
from robustcheck.stats import chi2_homogeneity, clopper_pearson, holm_adjust, ks_2samp


def holm_loop(p: list[float]) -> list[float]:
    """Holm's adjusted p-values from the definition, one hypothesis at a time."""
    tested = [i for i, v in enumerate(p) if not np.isnan(v)]
    ranked = sorted(tested, key=lambda i: p[i])
    m = len(ranked)
    out = [float("nan")] * len(p)
    running = 0.0
    for j, i in enumerate(ranked, start=1):
        running = max(running, min(1.0, (m - j + 1) * p[i]))
        out[i] = running
    return out


def holm_rejections(p: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure: reject the smallest p while p_(j) <= alpha / (m - j + 1)."""
    ranked = sorted(range(len(p)), key=lambda i: p[i])
    rejected: set[int] = set()
    for j, i in enumerate(ranked, start=1):
        if p[i] > alpha / (len(p) - j + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_adjust_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    families = rng.random((200, 12)) ** 3  # many small p-values, so the steps matter
    families[::7, 2] = families[::7, 5]  # ties
    families[::11, 0] = 0.0
    families[::13, 4] = 1.0
    adjusted = holm_adjust(families)
    for row, out in zip(families, adjusted, strict=True):
        np.testing.assert_allclose(out, holm_loop(list(row)), rtol=1e-15, atol=0)
        for alpha in (0.01, 0.05, 0.2):
            assert set(np.flatnonzero(out <= alpha)) == holm_rejections(list(row), alpha)
    # the textbook example: p = 0.01, 0.04, 0.03, 0.005 -> 0.03, 0.06, 0.06, 0.02
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # NaN takes no part: m counts the others
    with_nan = [0.01, np.nan, 0.04, 0.002]
    np.testing.assert_allclose(holm_adjust(with_nan), holm_loop(with_nan), rtol=1e-15)
    assert np.isnan(holm_adjust(with_nan)[1])
    assert holm_adjust(np.zeros((3, 0))).shape == (3, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.5, 1.5])
    with pytest.raises(ValueError, match="scalar"):
        holm_adjust(0.5)


def test_ks_pvalues_of_repeated_statistics_are_scipy_values() -> None:
    """The asymptotic KS p-value evaluates each distinct (D, n) once: the same numbers."""
    from scipy.stats import kstwo

    rng = np.random.default_rng(4)
    na = rng.choice([300, 1000], size=1000)
    nb = rng.choice([500, 1000], size=1000)
    d = rng.integers(0, 120, size=1000) / 1000.0
    d[::97] = np.nan
    en = np.round(np.maximum(na, nb) * np.minimum(na, nb) / (na + nb))
    expected = np.clip(kstwo.sf(d, en), 0.0, 1.0)
    np.testing.assert_array_equal(stats._ks_pvalue(d, na, nb, True), expected)


def test_pvalue_tests_are_one_family() -> None:
    ks = np.array([0.004, 0.3, 0.02])
    chi2 = np.array([0.5, 0.001, 0.9])
    both = pvalue_tests({"ks": ks, "chi2": chi2}, {"ks": 0.01, "chi2": 0.01}, "holm")
    joint = holm_loop([*ks, *chi2])
    np.testing.assert_allclose(both.adjusted["ks"], joint[:3], rtol=1e-15)
    np.testing.assert_allclose(both.adjusted["chi2"], joint[3:], rtol=1e-15)
    assert both.n_tests == 6
    # 0.001 * 6 and 0.004 * 5 ... only the first is below 0.01 once corrected
    assert both.rejected("chi2").tolist() == [False, True, False]
    assert not both.rejected("ks").any() and bool(both.alarm())
    # a kind without a threshold takes no part, so the family is smaller
    only_ks = pvalue_tests({"ks": ks, "chi2": chi2}, {"ks": 0.015, "chi2": None}, "holm")
    assert set(only_ks.raw) == {"ks"} and only_ks.n_tests == 3
    assert only_ks.rejected("ks").tolist() == [True, False, False]  # 0.004 * 3 < 0.015
    # none: each p-value at its own threshold, today's rule
    raw = pvalue_tests({"ks": ks, "chi2": chi2}, {"ks": 0.01, "chi2": 0.01}, "none")
    assert raw.rejected("ks").tolist() == [True, False, False]
    np.testing.assert_array_equal(raw.adjusted["chi2"], chi2)
    # leading axes are separate families
    stacked = pvalue_tests({"ks": np.stack([ks, ks[::-1]])}, {"ks": 0.02}, "holm")
    np.testing.assert_allclose(stacked.adjusted["ks"][1], holm_loop(list(ks[::-1])))
    assert stacked.alarm().tolist() == [True, True]
    with pytest.raises(ValueError, match="correction"):
        pvalue_tests({"ks": ks}, {"ks": 0.01}, "bonferroni")


def null_pvalues(rng: np.random.Generator, repetitions: int, events: int) -> dict[str, np.ndarray]:
    """KS and chi2 p-values (repetitions, 10 features) of two independent samples of one
    distribution: nine Gaussians with pairwise correlation 0.3 and a log-normal feature.
    All repetitions are columns of one call of each statistic, as the check's features are."""
    features, rho = 10, 0.3
    cov = np.full((features - 1, features - 1), rho) + (1 - rho) * np.eye(features - 1)
    chol = np.linalg.cholesky(cov).astype(np.float32)

    def draw() -> np.ndarray:
        x = np.empty((events, repetitions, features), dtype=np.float32)
        x[..., :-1] = rng.standard_normal((events, repetitions, features - 1), np.float32) @ chol.T
        x[..., -1] = np.exp(rng.standard_normal((events, repetitions), np.float32))
        return x.reshape(events, repetitions * features)

    a, b = draw(), draw()
    return {
        "ks": ks_2samp(a, b).pvalue.reshape(repetitions, features),
        "chi2": chi2_homogeneity(a, b, bins=20).pvalue.reshape(repetitions, features),
    }


def test_whole_check_false_alarm_rate_is_the_threshold() -> None:
    """ks_min_pvalue = chi2_min_pvalue = 0.01 on 8,000 unchanged samples of 10 features:
    with Holm over the 20 tests the check fails in 0.8% of them (95% CL 0.6-1.0%); held one
    by one, in 15% (benchmarks/README.md has the study with more repetitions)."""
    rng = np.random.default_rng(2026)
    alpha, chunks, size = 0.01, 4, 2000
    thresholds = {"ks": alpha, "chi2": alpha}
    alarms = {"holm": 0, "none": 0}
    for _ in range(chunks):
        pvalues = null_pvalues(rng, size, events=500)
        for correction in alarms:
            alarms[correction] += int(pvalue_tests(pvalues, thresholds, correction).alarm().sum())
    n = chunks * size
    holm, none = alarms["holm"] / n, alarms["none"] / n
    assert 0.005 <= holm <= 0.015, f"holm false-alarm rate {holm:.4f}"
    _, high = clopper_pearson(alarms["holm"], n)
    assert high < 0.015  # within the band at 95% confidence, not only by the estimate
    # uncorrected, 20 tests at 1% each: above the band by an order of magnitude
    low, _ = clopper_pearson(alarms["none"], n)
    assert low > 10 * alpha, f"none false-alarm rate {none:.4f}"
