"""robustcheck.stats against scipy, scikit-learn, NumPy and brute force, on seeded random data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import jensenshannon

from robustcheck import stats


def _samples(seed: int, n_a: int, n_b: int, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    """Columns: continuous, shifted continuous, small integers (many ties), rounded, constant."""
    rng = np.random.default_rng(seed)

    def one(n: int, shift: float) -> np.ndarray:
        return np.stack(
            [
                rng.normal(0.0, 1.0, n),
                rng.normal(shift, 1.0, n),
                rng.integers(0, 4, n),
                np.round(rng.exponential(1.0 + shift, n), 1),
                np.full(n, 3.0),
            ],
            axis=1,
        ).astype(dtype)

    return one(n_a, 0.0), one(n_b, 0.3)


SIZES = [(1, 1), (1, 3), (2, 5), (7, 4), (30, 31), (200, 150), (1000, 700)]


# --- Kolmogorov-Smirnov ----------------------------------------------------------------------


def _check_ks(a: np.ndarray, b: np.ndarray, ma=None, mb=None) -> None:
    res = stats.ks_2samp(a, b, mask_a=ma, mask_b=mb)
    for j in range(a.shape[1]):
        xa = a[:, j] if ma is None else a[ma[:, j], j]
        xb = b[:, j] if mb is None else b[mb[:, j], j]
        if xa.size == 0 or xb.size == 0:
            assert np.isnan(res.statistic[j]) and np.isnan(res.pvalue[j])
            continue
        ref = scipy.stats.ks_2samp(xa, xb, method="asymp")
        assert res.statistic[j] == pytest.approx(ref.statistic, abs=1e-12), j
        if np.isnan(ref.pvalue):  # scipy: en rounds to 0 for one event against one
            assert np.isnan(res.pvalue[j])
        else:
            assert res.pvalue[j] == pytest.approx(ref.pvalue, abs=1e-6), j


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning:scipy")  # scipy, 1 vs 1 event
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("n_a", "n_b"), SIZES)
def test_ks_matches_scipy(n_a: int, n_b: int, dtype: type) -> None:
    a, b = _samples(n_a * 1000 + n_b, n_a, n_b, dtype)
    _check_ks(a, b)


def test_ks_float64_values_not_exact_in_float32() -> None:
    # Values that differ only below float32 precision: the columns are compared in float64.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(400, 3))
    a = base + rng.integers(0, 3, (400, 3)) * 1e-12
    b = base[::-1] + rng.integers(0, 3, (400, 3)) * 1e-12
    _check_ks(a, b)
    _check_ks(a.astype(np.float32), b)  # mixed: float64 too


def test_ks_scans_values_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many ties across the blocks' edges, and a sample much larger than the other.
    rng = np.random.default_rng(11)
    a = rng.integers(0, 40, (3000, 2)).astype(np.float32)
    b = rng.integers(2, 45, (500, 2)).astype(np.float32)
    whole = stats.ks_2samp(a, b)
    monkeypatch.setattr(stats, "_KS_KEYS", 7)
    split = stats.ks_2samp(a, b)
    np.testing.assert_array_equal(whole.statistic, split.statistic)
    _check_ks(a, b)


def test_ks_does_not_sort_the_callers_data() -> None:
    a, b = _samples(12, 200, 300, np.float32)
    before = a.copy(), b.copy()
    stats.ks_2samp(a, b)
    stats.ks_2samp(a[:, 1], b[:, 1])
    np.testing.assert_array_equal(a, before[0])
    np.testing.assert_array_equal(b, before[1])


def test_ks_ties_integers_signed_zero_and_infinities() -> None:
    rng = np.random.default_rng(6)
    a = rng.integers(-3, 4, (500, 3)).astype(np.float32)
    b = rng.integers(-2, 5, (450, 3)).astype(np.float32)
    a[:50, 1], b[:60, 1] = -0.0, 0.0
    a[:5, 2], b[-7:, 2] = np.inf, -np.inf
    _check_ks(a, b)
    _check_ks(a[:, :2].astype(np.int64), b[:, :2].astype(np.int16))  # integer dtypes


def test_ks_masks() -> None:
    a, b = _samples(7, 300, 250)
    rng = np.random.default_rng(8)
    ma = rng.random(a.shape) < 0.7
    mb = rng.random(b.shape) < 0.4
    ma[:, 3] = False  # an empty column gives NaN
    _check_ks(a, b, ma, mb)
    _check_ks(a.astype(np.float32), b.astype(np.float32), ma, mb)


def test_ks_nan_propagates_and_shapes() -> None:
    a, b = _samples(9, 50, 60)
    a[3, 0] = np.nan
    mask = np.ones(a.shape, dtype=bool)
    mask[3, 0] = False
    res = stats.ks_2samp(a, b)
    assert np.isnan(res.statistic[0]) and not np.isnan(res.statistic[1:]).any()
    assert not np.isnan(stats.ks_2samp(a, b, mask_a=mask).statistic).any()
    one = stats.ks_2samp(a[:, 1], b[:, 1])  # 1-D is one column
    assert one.statistic.shape == (1,)
    with pytest.raises(ValueError, match="features"):
        stats.ks_2samp(a, b[:, :2])
    with pytest.raises(ValueError, match="mask"):
        stats.ks_2samp(a, b, mask_a=mask[:10])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_chunks_and_threads_agree(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    a, b = _samples(10, 800, 900, dtype)
    mask = np.random.default_rng(0).random(a.shape) < 0.9
    whole = stats.ks_2samp(a, b, mask_a=mask)
    chi = stats.chi2_homogeneity(a, b, mask_a=mask)
    monkeypatch.setattr(stats, "_BLOCK_VALUES", 1000)  # one column per block, thread pool
    monkeypatch.setattr(stats, "_SCRATCH_BYTES", 1 << 30)
    monkeypatch.setattr(stats, "_GATHER_ROWS", 64)  # many chunks per column
    monkeypatch.setattr(stats, "_n_threads", lambda: 2)
    split = stats.ks_2samp(a, b, mask_a=mask)
    np.testing.assert_array_equal(whole.statistic, split.statistic)
    np.testing.assert_array_equal(whole.pvalue, split.pvalue)
    np.testing.assert_array_equal(chi.statistic, stats.chi2_homogeneity(a, b, mask_a=mask)[0])
    _check_ks(a, b, mask)


def test_ks_fast_tail_close_to_scipy() -> None:
    from scipy.stats import kstwo

    n = 100_000  # the smallest effective n that takes the fast tail; its error is largest here
    d = np.sqrt(np.array([2.2, 5.0, 40.0]) / n)
    na = np.full(3, 2 * n)
    exact = kstwo.sf(d, n)  # what scipy's ks_2samp(method="asymp") returns
    fast = stats._ks_pvalue(d, na, na, fast_tail=True)
    np.testing.assert_allclose(fast, exact, rtol=0, atol=3e-7)
    assert (fast != exact).all()  # the fast tail was taken
    assert stats._ks_pvalue(d[:1], na[:1], na[:1], fast_tail=False)[0] == exact[0]


# --- binned tests: reference implementation, one column at a time -----------------------------


def _reference_counts(xa: np.ndarray, xb: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.unique(np.quantile(xa.astype(np.float64), np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    ca = np.bincount(np.searchsorted(inner, xa, side="right"), minlength=inner.size + 1)
    cb = np.bincount(np.searchsorted(inner, xb, side="right"), minlength=inner.size + 1)
    return ca, cb


def _reference_merge(ca: np.ndarray, cb: np.ndarray, min_expected: float) -> tuple[list, list]:
    small, grand = min(ca.sum(), cb.sum()), ca.sum() + cb.sum()
    groups: list[list[int]] = []
    acc_a = acc_b = 0
    for x, y in zip(ca, cb, strict=True):
        acc_a, acc_b = acc_a + x, acc_b + y
        if acc_a + acc_b > 0 and small * (acc_a + acc_b) / grand >= min_expected:
            groups.append([acc_a, acc_b])
            acc_a = acc_b = 0
    if acc_a + acc_b > 0 or not groups:
        if groups:
            groups[-1][0] += acc_a
            groups[-1][1] += acc_b
        else:
            groups.append([acc_a, acc_b])
    return [g[0] for g in groups], [g[1] for g in groups]


CHI2_CASES = [(40, 35, 5), (200, 150, 5), (1000, 700, 5), (1000, 1200, 0), (300, 20, 5)]


@pytest.mark.parametrize(("n_a", "n_b", "min_expected"), CHI2_CASES)
@pytest.mark.parametrize("bins", [1, 4, 20])
def test_chi2_and_js_match_scipy(n_a: int, n_b: int, min_expected: float, bins: int) -> None:
    a, b = _samples(n_a + 7 * n_b + bins, n_a, n_b)
    res = stats.chi2_homogeneity(a, b, bins=bins, min_expected=min_expected)
    js = stats.js_distance(a, b, bins=bins)
    ca_all, cb_all, na, nb, _ = stats._binned_counts(a, b, bins, None, None)
    for j in range(a.shape[1]):
        ca, cb = _reference_counts(a[:, j], b[:, j], bins)
        np.testing.assert_array_equal(ca_all[j][ca_all[j] + cb_all[j] > 0], ca[ca + cb > 0])
        np.testing.assert_array_equal(cb_all[j][ca_all[j] + cb_all[j] > 0], cb[ca + cb > 0])
        assert js[j] == pytest.approx(jensenshannon(ca, cb, base=2), abs=1e-12)
        ma, mb = _reference_merge(ca, cb, min_expected)
        assert res.dof[j] == len(ma) - 1
        table = np.vstack([ma, mb])
        if len(ma) == 1:
            assert res.statistic[j] == 0.0 and res.pvalue[j] == 1.0
            continue
        ref = scipy.stats.chi2_contingency(table, correction=False)
        assert ref.dof == res.dof[j]
        assert res.statistic[j] == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
        assert res.pvalue[j] == pytest.approx(ref.pvalue, abs=1e-6)
        assert ref.expected_freq.min() >= min_expected


def test_chi2_internal_merged_counts_through_chi2_contingency() -> None:
    a, b = _samples(11, 600, 500, np.float32)
    ca, cb, na, nb, _ = stats._binned_counts(a, b, 20, None, None)
    ma, mb, n_groups = stats._merge_bins(ca, cb, na, nb, 5)
    res = stats.chi2_homogeneity(a, b)
    for j in np.flatnonzero(n_groups > 1):
        ref = scipy.stats.chi2_contingency(
            np.vstack([ma[j, : n_groups[j]], mb[j, : n_groups[j]]]), correction=False
        )
        assert (res.statistic[j], res.dof[j]) == (pytest.approx(ref.statistic), ref.dof)
        assert res.pvalue[j] == pytest.approx(ref.pvalue, abs=1e-6)


def test_binned_masks_and_nan() -> None:
    a, b = _samples(12, 400, 300)
    rng = np.random.default_rng(13)
    ma = rng.random(a.shape) < 0.6
    mb = rng.random(b.shape) < 0.8
    ma[:, 4] = False
    b[0, 1] = np.nan
    mb[0, 1] = True
    res = stats.chi2_homogeneity(a, b, mask_a=ma, mask_b=mb)
    js = stats.js_distance(a, b, mask_a=ma, mask_b=mb)
    for j in (0, 2, 3):
        xa, xb = a[ma[:, j], j], b[mb[:, j], j]
        ca, cb = _reference_counts(xa, xb, 20)
        mca, mcb = _reference_merge(ca, cb, 5)
        ref = scipy.stats.chi2_contingency(np.vstack([mca, mcb]), correction=False)
        assert res.statistic[j] == pytest.approx(ref.statistic, rel=1e-9)
        assert res.pvalue[j] == pytest.approx(ref.pvalue, abs=1e-6)
        assert js[j] == pytest.approx(jensenshannon(ca, cb, base=2), abs=1e-12)
    for j in (1, 4):  # NaN in a valid entry; a column with no valid entry
        assert np.isnan(res.statistic[j]) and np.isnan(res.pvalue[j]) and np.isnan(js[j])


def test_empty_samples_give_nan() -> None:
    a, b = np.zeros((0, 3)), np.ones((5, 3))
    for res in (stats.ks_2samp(a, b), stats.chi2_homogeneity(b, a)):
        assert res.statistic.shape == (3,) and np.isnan(res.statistic).all()
        assert np.isnan(res.pvalue).all()
    assert np.isnan(stats.js_distance(a, b)).all()
    assert stats.ks_2samp(np.zeros((4, 0)), np.zeros((3, 0))).statistic.shape == (0,)


def test_quantile_edges_match_numpy() -> None:
    rng = np.random.default_rng(14)
    rows = np.sort(rng.normal(size=(3, 101)), axis=1)
    n = np.array([101, 57, 2])
    edges = stats._quantile_edges(rows, n, 7)
    for r in range(3):
        ref = np.quantile(rows[r, : n[r]], np.linspace(0, 1, 8))[1:-1]
        np.testing.assert_array_equal(edges[r], ref)


def test_js_identical_and_disjoint() -> None:
    a = np.arange(100.0)[:, None]
    assert stats.js_distance(a, a)[0] == 0.0
    assert stats.js_distance(a, a + 1000.0, bins=10)[0] == pytest.approx(
        jensenshannon(np.r_[np.full(9, 10), 10], np.r_[np.zeros(9), 100], base=2)
    )


# --- correlations ----------------------------------------------------------------------------


def test_correlation_change_matches_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "_CORR_CHUNK", 37)  # several chunks
    rng = np.random.default_rng(15)
    cov = [[1.0, 0.6, 0.1, 0.0], [0.6, 1.0, 0.3, 0.0], [0.1, 0.3, 1.0, -0.4], [0, 0, -0.4, 1.0]]
    a = rng.multivariate_normal([1000.0, 0.0, -5.0, 0.0], cov, 500).astype(np.float32)
    b = a.copy()
    b[:, 3] = -b[:, 3] + rng.normal(0, 0.5, 500)
    res = stats.correlation_change(a, b)
    ca, cb = np.corrcoef(a, rowvar=False), np.corrcoef(b, rowvar=False)
    np.testing.assert_allclose(res.nominal, ca, atol=1e-12)
    np.testing.assert_allclose(res.perturbed, cb, atol=1e-12)
    diff = np.abs(cb - ca)
    assert res.max_abs == pytest.approx(diff.max(), abs=1e-12)
    assert diff[res.argmax] == pytest.approx(diff.max(), abs=1e-12)
    assert res.argmax[0] <= res.argmax[1]
    rel = np.linalg.norm(cb - ca) / np.linalg.norm(ca)
    assert res.relative_frobenius == pytest.approx(rel, rel=1e-10)


def test_correlation_constant_columns() -> None:
    rng = np.random.default_rng(16)
    a = rng.normal(size=(200, 3))
    a[:, 1] = 0.1  # constant (its mean is not exactly 0.1 in floating point)
    c = stats.pearson_matrix(a)
    assert not np.isnan(c).any()
    np.testing.assert_array_equal(c[1], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(c[:, 1], [0.0, 1.0, 0.0])
    assert c[0, 2] == pytest.approx(np.corrcoef(a[:, 0], a[:, 2])[0, 1], abs=1e-12)
    b = a.copy()
    b[:, 1] = rng.normal(size=200)
    res = stats.correlation_change(a, b)
    assert np.isfinite(res.relative_frobenius)


# --- ROC, AUC and working points -------------------------------------------------------------


def _roc_data(seed: int, n: int, weighted: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = np.round(rng.normal(y * 0.8, 1.0) * 4) / 4  # many ties, across both classes
    w = rng.uniform(0.1, 3.0, n) if weighted else None
    return y, scores, w


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("seed", "n"), [(0, 2), (1, 10), (2, 300), (3, 5000)])
def test_roc_and_auc_match_sklearn(seed: int, n: int, weighted: bool) -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    y, s, w = _roc_data(seed, n, weighted)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    assert stats.auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)
    for drop in (False, True):
        fpr, tpr, thr = stats.roc_curve(y, s, w, drop_intermediate=drop)
        ref = sk_roc_curve(y, s, sample_weight=w, drop_intermediate=drop)
        for ours, theirs in zip((fpr, tpr, thr), ref, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_auc_in_blocks_equals_the_pairwise_count(
    monkeypatch: pytest.MonkeyPatch, weighted: bool
) -> None:
    """The Mann-Whitney form, in blocks of 7 background scores, against every (signal,
    background) pair counted: above 1, tied 1/2, with the pair's weight product (negative
    weights, as NLO samples have, included)."""
    y, s, w = _roc_data(4, 400, weighted)
    if w is not None:
        w[::17] *= -0.5
    sig, bkg = y == 1, y == 0
    wins = (s[sig][:, None] > s[bkg][None, :]) + 0.5 * (s[sig][:, None] == s[bkg][None, :])
    pair = np.ones_like(wins) if w is None else w[sig][:, None] * w[bkg][None, :]
    expected = float((wins * pair).sum() / pair.sum())
    monkeypatch.setattr(stats, "_AUC_BLOCK", 7)
    assert stats.auc(y, s, w) == pytest.approx(expected, rel=1e-12)
    fpr, tpr, _ = stats.roc_curve(y, s, w)  # the trapezoids of the ROC curve agree
    assert stats.auc(y, s, w) == pytest.approx(np.trapezoid(tpr, fpr), rel=1e-12)


def test_auc_ties_count_half() -> None:
    assert stats.auc([0, 1], [0.5, 0.5]) == 0.5
    assert stats.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    with pytest.raises(ValueError, match="signal and background"):
        stats.auc([1, 0], [1.0, 0.0], weights=[2.0, 0.0])  # zero-weight events are dropped


def test_roc_validation() -> None:
    with pytest.raises(ValueError, match="signal and background"):
        stats.roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0 \\(background\\) or 1"):
        stats.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        stats.auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="entries"):
        stats.auc([0, 1, 1], [0.1, 0.2])


def _brute_threshold(s: np.ndarray, target: float, w: np.ndarray | None) -> float:
    w = np.ones_like(s) if w is None else w
    best, best_dist = None, np.inf
    for t in np.unique(s)[::-1]:  # highest first, so ties in distance keep the higher one
        dist = abs(w[s >= t].sum() / w.sum() - target)
        if dist < best_dist:
            best, best_dist = t, dist
    return float(best)


@pytest.mark.parametrize("weighted", [False, True])
def test_threshold_and_rejection_brute_force(weighted: bool) -> None:
    rng = np.random.default_rng(17)
    for n in (1, 4, 25, 400):
        s = np.round(rng.normal(size=n), 1)
        w = rng.uniform(0.2, 2.0, n) if weighted else None
        ww = np.ones(n) if w is None else w
        for target in (0.01, 0.3, 0.375, 0.5, 0.9, 1.0):
            t = stats.threshold_at_efficiency(s, target, w)
            ref = _brute_threshold(s, target, w)
            assert abs(ww[s >= t].sum() / ww.sum() - target) == pytest.approx(
                abs(ww[s >= ref].sum() / ww.sum() - target), abs=1e-12
            )
            if not weighted:
                assert t == ref
            bkg = np.round(rng.normal(-1.0, 1.0, 3 * n + 1), 1)
            wb = rng.uniform(0.2, 2.0, bkg.size) if weighted else None
            wbb = np.ones(bkg.size) if wb is None else wb
            passing = wbb[bkg >= t].sum()
            expected = np.inf if passing == 0 else wbb.sum() / passing
            assert stats.background_rejection(bkg, t, wb) == pytest.approx(expected, rel=1e-12)


def test_threshold_examples_and_validation() -> None:
    s = np.array([1.0, 2.0, 3.0, 4.0])
    assert stats.threshold_at_efficiency(s, 0.5) == 3.0
    assert stats.threshold_at_efficiency(s, 0.375) == 4.0  # 0.25 and 0.5 equally close
    assert stats.threshold_at_efficiency(s, 1.0) == 1.0
    assert stats.background_rejection(s, 4.5) == np.inf
    assert stats.background_rejection(s, 2.0) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="efficiency"):
        stats.threshold_at_efficiency(s, 0.0)
    with pytest.raises(ValueError, match="positive"):
        stats.background_rejection(s, 1.0, weights=np.zeros(4))


# --- calibration under the null --------------------------------------------------------------


def test_false_positive_rate_under_null() -> None:
    """400 repetitions x 4 features of 500 vs 500 events from one distribution: ~1% below 0.01.

    The repetitions are the columns of one call. Binomial(1600, 0.01) lies in [3, 40] with
    probability above 1 - 1e-6.
    """
    rng = np.random.default_rng(2024)
    reps, feats, n = 400, 4, 500

    def draw() -> np.ndarray:
        cols = [
            rng.normal(size=(n, reps)),
            rng.exponential(size=(n, reps)),
            rng.gamma(3.0, size=(n, reps)),
            rng.uniform(size=(n, reps)),
        ]
        return np.concatenate(cols, axis=1).astype(np.float32)

    a, b = draw(), draw()
    assert a.shape[1] == reps * feats
    ks = stats.ks_2samp(a, b).pvalue
    chi = stats.chi2_homogeneity(a, b).pvalue
    for p in (ks, chi):
        rate = float((p < 0.01).mean())
        assert 0.002 <= rate <= 0.025, rate
        assert 0.35 <= float(np.median(p)) <= 0.65  # p-values are roughly uniform


def test_module_imports_no_scipy_or_torch() -> None:
    code = (
        "import sys, robustcheck.stats, robustcheck.pareto;"
        "bad = [m for m in ('scipy', 'torch', 'sklearn') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
