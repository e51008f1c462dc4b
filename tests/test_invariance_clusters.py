"""The invariance tests of particle inputs (several correlated entries per event) are corrected
with design effects estimated from the data (robustcheck.invariance_stats): no false alarms
beyond the nominal level between two samples of the same jets, real shifts still seen, and one
entry per event exactly as before (scipy's figures)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from robustcheck.checks.invariance import pvalue_tests
from robustcheck.invariance_stats import (
    InvarianceFigures,
    chi2_events_to_detect,
    compare,
    event_ids,
    ks_events_to_detect,
)

FEATURES = {"parts": ("x", "y")}
MOVABLE = {"parts": np.array([True, True])}
PADDING = 30
LEVEL = 0.05  # the family's false-alarm level (Holm over every test)


def make_jets(rng: np.random.Generator, n_jets: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Jets of 10 to 30 constituents padded to 30, with a mask: every constituent of a jet
    shares the jet's random offsets (sd 1; constituent noise sd 0.5), so entries of one jet are
    strongly correlated (intra-jet correlation 0.8). ``shift`` moves x of every constituent."""
    multiplicity = rng.integers(10, PADDING + 1, n_jets)
    mask = np.arange(PADDING)[None, :] < multiplicity[:, None]
    offset = rng.normal(size=(n_jets, 1, 2))
    parts = offset + 0.5 * rng.normal(size=(n_jets, PADDING, 2))
    parts[..., 1] += 0.5 * parts[..., 0]  # correlated features
    parts[..., 0] += shift
    parts[~mask] = -999.0  # padding, masked out
    return {"parts": parts, "mask": mask}


class Masked:
    """A numpy stand-in for the torch masks :func:`event_ids` reads (indexing, ``numpy()``)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __getitem__(self, index: object) -> Masked:
        return Masked(self.array[np.asarray(index)])

    def numpy(self) -> np.ndarray:
        return self.array


def figures(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], clustered: bool
) -> InvarianceFigures:
    """The invariance figures of sample b against sample a, corrected for the jets or not."""
    entries_a = {"parts": a["parts"][a["mask"]]}
    entries_b = {"parts": b["parts"][b["mask"]]}
    if not clustered:
        return compare(entries_a, entries_b, FEATURES, MOVABLE)
    return compare(
        entries_a,
        entries_b,
        FEATURES,
        MOVABLE,
        reference_events=event_ids({"parts": Masked(a["mask"])}, FEATURES),
        attacked_events=event_ids({"parts": Masked(b["mask"])}, FEATURES),
    )


def alarms(figs: InvarianceFigures) -> bool:
    """Whether the check's family of p-value tests (KS, chi2, correlation; Holm) fails."""
    pvalues = {
        "ks": np.array([f.ks_pvalue for f in figs.features]),
        "chi2": np.array([f.chi2_pvalue for f in figs.features]),
        "corr": np.array([p.pvalue for p in figs.pairs]),
    }
    return bool(pvalue_tests(pvalues, dict.fromkeys(pvalues, LEVEL), "holm").alarm())


def test_event_ids_number_the_entries_by_event() -> None:
    mask = np.array([[True, True, False], [False, False, False], [True, False, True]])
    ids = event_ids({"parts": Masked(mask)}, FEATURES)["parts"]
    np.testing.assert_array_equal(ids, [0, 0, 2, 2])
    chosen = event_ids({"parts": Masked(mask)}, FEATURES, np.array([2]))["parts"]
    np.testing.assert_array_equal(chosen, [0, 0])
    empty = event_ids({"parts": Masked(mask[:0])}, FEATURES)["parts"]
    assert empty.dtype == np.int32 and len(empty) == 0


def test_null_false_alarm_rate_is_at_most_nominal_with_the_correction() -> None:
    """80 pairs of independent samples of 100 jets from the same distribution: uncorrected,
    the per-entry tests fail most pairs (the motivation); corrected, the check fails about as
    often as its level says."""
    rng = np.random.default_rng(11)
    pairs = [(make_jets(rng, 100), make_jets(rng, 100)) for _ in range(80)]
    naive = np.mean([alarms(figures(a, b, clustered=False)) for a, b in pairs])
    corrected_figs = [figures(a, b, clustered=True) for a, b in pairs]
    corrected = np.mean([alarms(f) for f in corrected_figs])
    assert naive > 0.5  # per-entry tests: false alarms in most pairs
    # binomial(80, 0.05): 9 or more alarms has probability 0.02
    assert corrected <= 8 / 80, (naive, corrected)
    # the design effects are those of the jets (~21 entries, intra-jet correlation 0.8 of the
    # values; less of the bin indicators)
    ks_deff = np.median([f.ks_deff for figs in corrected_figs for f in figs.features])
    chi2_deff = np.median([f.chi2_deff for figs in corrected_figs for f in figs.features])
    assert 5 < ks_deff < 21 and 2 < chi2_deff < 21
    assert all(f.entries_per_event > 10 for f in corrected_figs[0].features)
    # the single tests hold their level too (pooled over the pairs, each test at LEVEL)
    ks = np.mean([f.ks_pvalue < LEVEL for figs in corrected_figs for f in figs.features])
    chi2 = np.mean([f.chi2_pvalue < LEVEL for figs in corrected_figs for f in figs.features])
    corr = np.mean([p.pvalue < LEVEL for figs in corrected_figs for p in figs.pairs])
    assert max(ks, chi2, corr) <= 0.1, (ks, chi2, corr)


def test_a_real_shift_is_still_detected() -> None:
    """0.3 sigma on x of every constituent of 1000 jets against 1000 other jets: the corrected
    KS and chi2 tests see it on x (and not on y), and the check fails."""
    rng = np.random.default_rng(5)
    a, b = make_jets(rng, 1000), make_jets(rng, 1000, shift=0.3 * np.sqrt(1.25))
    figs = figures(a, b, clustered=True)
    x, y = figs.features
    assert x.ks_pvalue < 1e-4 and x.chi2_pvalue < 1e-4
    assert y.ks_pvalue > 1e-3 and x.ks_deff > 5
    assert alarms(figs)


def test_events_to_detect_counts_effective_entries() -> None:
    """The events per sample a test needs for a shift, from the paired figures (the same jets
    before and after) as the check computes them (entries needed * D / entries per event):
    samples of that many jets see the shift about half of the time (KS: at least half), and a
    tenth of them rarely."""
    rng = np.random.default_rng(2)
    shift = 0.25
    jets = make_jets(rng, 400)
    moved = {"parts": jets["parts"].copy(), "mask": jets["mask"]}
    moved["parts"][..., 0] += shift
    paired = figures(jets, moved, clustered=True).features[0]
    level = LEVEL / 4
    per_event = paired.entries_per_event
    n_ks = ks_events_to_detect(paired.ks_statistic, level) * paired.ks_deff / per_event
    n_chi2 = (
        chi2_events_to_detect(
            paired.chi2_statistic / paired.chi2_spread,
            paired.chi2_dof / paired.chi2_spread,
            paired.n_reference,
            paired.n_attacked,
            level,
        )
        / per_event
    )
    assert 20 < n_ks < 2000 and 20 < n_chi2 < 2000

    def seen(n_events: float) -> tuple[float, float]:
        n = max(int(round(n_events)), 3)
        hits = [
            figures(make_jets(rng, n), make_jets(rng, n, shift), clustered=True).features[0]
            for _ in range(40)
        ]
        ks = np.mean([f.ks_pvalue < level for f in hits])
        chi2 = np.mean([f.chi2_pvalue < level for f in hits])
        return float(ks), float(chi2)

    assert seen(n_ks)[0] >= 0.4
    assert 0.2 <= seen(n_chi2)[1] <= 0.85
    assert seen(n_ks / 10)[0] <= 0.2 and seen(n_chi2 / 10)[1] <= 0.2


@pytest.mark.parametrize("n_a, n_b", [(300, 300), (500, 211)])
def test_one_entry_per_event_gives_scipys_figures(n_a: int, n_b: int) -> None:
    """With the event ids of one entry per event (a masked input with at most one real entry
    per event, or a flat one) nothing is corrected: KS as scipy's asymptotic ks_2samp, chi2 as
    scipy's chi2_contingency on the same counts, correlations as without ids."""
    rng = np.random.default_rng(n_b)
    flat = {"x": rng.normal(size=(n_a, 2)), "y": rng.normal(0.05, 1.0, size=(n_b, 2))}
    with_ids = compare(
        {"parts": flat["x"]},
        {"parts": flat["y"]},
        FEATURES,
        MOVABLE,
        reference_events={"parts": rng.permutation(n_a)},
        attacked_events={"parts": np.arange(n_b)},
    )
    plain = compare({"parts": flat["x"]}, {"parts": flat["y"]}, FEATURES, MOVABLE)
    assert with_ids == plain
    for j, f in enumerate(with_ids.features):
        ref = scipy.stats.ks_2samp(flat["x"][:, j], flat["y"][:, j], method="asymp")
        assert f.ks_statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert f.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-9)
        assert f.ks_deff == f.chi2_deff == f.entries_per_event == 1.0
        edges = np.unique(np.quantile(flat["x"][:, j], np.linspace(0, 1, 21)))
        inner = edges[1:-1]
        counts = [
            np.bincount(np.searchsorted(inner, v[:, j], side="right"), minlength=len(edges) - 1)
            for v in (flat["x"], flat["y"])
        ]
        table = np.vstack(counts)
        stat, p, dof, _ = scipy.stats.chi2_contingency(table[:, table.sum(axis=0) > 0], False)
        if (np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()).min() >= 5:
            assert f.chi2_statistic == pytest.approx(stat, rel=1e-9)
            assert f.chi2_pvalue == pytest.approx(p, rel=1e-9)
    # a padded input whose events hold at most one real entry
    mask = np.zeros((n_a, 3), dtype=bool)
    mask[np.arange(n_a), rng.integers(0, 3, n_a)] = True
    ids = event_ids({"parts": Masked(mask)}, FEATURES)
    masked = compare(
        {"parts": flat["x"]},
        {"parts": flat["y"]},
        FEATURES,
        MOVABLE,
        reference_events=ids,
        attacked_events={"parts": np.arange(n_b)},
    )
    assert masked == plain


# --- the per-event sums in bounded memory, against the direct formulas ------------------------


def direct_design_effects(
    x: np.ndarray, y: np.ndarray, ids_x: np.ndarray, ids_y: np.ndarray, bins: int
) -> tuple[np.ndarray, ...]:
    """design_effects written out with the whole (events, bins) count matrices (Cochran 6.2)."""

    def proportion_deff(counts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, m = sizes.sum(), len(sizes)
        p = counts.sum(axis=0) / n
        resid = counts - sizes[:, None] * p[None, :]
        v = m / (m - 1) * (resid * resid).sum(axis=0) / n**2
        with np.errstate(divide="ignore", invalid="ignore"):
            return p, np.where(p * (1 - p) > 0, v / (p * (1 - p) / n), np.nan)

    out: list[list[float]] = [[], [], [], []]
    for j in range(x.shape[1]):
        edges = np.unique(np.quantile(x[:, j], np.linspace(0, 1, bins + 1)))[1:-1]
        k = len(edges) + 1
        ks, props, covs, totals = [], [], [], []
        for values, ids in ((x[:, j], ids_x), (y[:, j], ids_y)):
            _, codes = np.unique(ids, return_inverse=True)
            m = codes.max() + 1
            counts = np.zeros((m, k))
            np.add.at(counts, (codes, np.searchsorted(edges, values, side="right")), 1.0)
            sizes = counts.sum(axis=1)
            _, d_cdf = proportion_deff(np.cumsum(counts, axis=1)[:, :-1], sizes)
            ks.append(max(float(np.nanmean(d_cdf)), 1.0))
            p, n = counts.sum(axis=0) / sizes.sum(), sizes.sum()
            resid = counts - sizes[:, None] * p[None, :]
            covs.append(m / (m - 1) * resid.T @ resid / n**2)
            props.append(p)
            totals.append(n)
        pooled = (props[0] * totals[0] + props[1] * totals[1]) / sum(totals)
        used = np.flatnonzero(pooled > 0)[:-1]
        omega = (np.diag(pooled[used]) - np.outer(pooled[used], pooled[used])) * (
            1 / totals[0] + 1 / totals[1]
        )
        ratio = np.linalg.solve(omega, (covs[0] + covs[1])[np.ix_(used, used)])
        mean = np.trace(ratio) / len(used)
        square = np.trace(ratio @ ratio) / len(used)
        out[0].append(ks[0])
        out[1].append(ks[1])
        out[2].append(max(mean, 1.0))
        out[3].append(max(square / mean**2, 1.0) if mean > 1 else 1.0)
    return tuple(np.array(o) for o in out)


def test_design_effects_in_chunks_equal_the_direct_formulas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of whole events (chunk sums of integers), a single chunk, and ids out of order
    (one chunk) all give the direct per-event formulas, KS and Rao-Scott factors alike."""
    from robustcheck import invariance_stats

    rng = np.random.default_rng(21)
    a, b = make_jets(rng, 400), make_jets(rng, 300, shift=0.1)
    ids_a = event_ids({"parts": Masked(a["mask"])}, FEATURES)["parts"]
    ids_b = event_ids({"parts": Masked(b["mask"])}, FEATURES)["parts"]
    x, y = a["parts"][a["mask"]], b["parts"][b["mask"]]
    expected = direct_design_effects(x, y, ids_a, ids_b, bins=12)
    assert (expected[2] > 1.5).all()  # the jets are strongly clustered

    def measured(chunk: int, order: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        monkeypatch.setattr(invariance_stats, "_CLUSTER_CHUNK", chunk)
        xs, ia = (x, ids_a) if order is None else (x[order], ids_a[order])
        clusters = invariance_stats._clusters("parts", xs, y, {"parts": ia}, {"parts": ids_b})
        assert clusters is not None
        return invariance_stats.design_effects(xs, y, clusters, bins=12)

    many = measured(37)  # chunks of about 37 entries: every chunk ends at an event's end
    for got, want in zip(many, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    for got, want in zip(measured(1 << 20), many, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    shuffled = measured(37, rng.permutation(len(x)))  # out of order: one chunk, same figures
    for got, want in zip(shuffled, many, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_event_chunks_keep_events_whole() -> None:
    from robustcheck.invariance_stats import _dense, event_chunks

    ids = np.repeat(np.arange(6), [3, 1, 9, 2, 2, 1])
    chunks = event_chunks(ids, size=4)
    assert chunks[0].start == 0 and chunks[-1].stop == len(ids)
    for before, after in zip(chunks[:-1], chunks[1:], strict=True):
        assert before.stop == after.start and ids[before.stop - 1] != ids[after.start]
    assert slice(4, 13) in chunks  # an event longer than a chunk is one chunk
    assert event_chunks(ids[::-1], size=4) == [slice(0, len(ids))]  # out of order
    same, n = _dense(ids)
    assert same is ids and n == 6  # already 0..m-1 in order: no copy
    codes, n = _dense(ids * 10 + 5)
    np.testing.assert_array_equal(codes, ids)
    assert n == 6
    codes, n = _dense(ids[::-1] * 3)
    np.testing.assert_array_equal(codes, ids[::-1])
    assert n == 6


def test_correlation_design_effect_in_chunks_equals_the_direct_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from robustcheck import invariance_stats

    rng = np.random.default_rng(22)
    a = make_jets(rng, 500)
    ids = event_ids({"parts": Masked(a["mask"])}, FEATURES)["parts"]
    x = a["parts"][a["mask"]].astype(np.float32)
    exact = x.astype(np.float64)
    u = (exact[:, 0] - exact[:, 0].mean()) / exact[:, 0].std()
    v = (exact[:, 1] - exact[:, 1].mean()) / exact[:, 1].std()
    r = float(np.mean(u * v))
    variance = float(np.mean((u * v - r * (u * u + v * v) / 2) ** 2))  # per entry, E[psi^2]
    totals = np.bincount(ids, weights=u * v - r * (u * u + v * v) / 2)
    m = len(totals)
    direct = m / (m - 1) * float(totals @ totals) / len(x) / variance
    monkeypatch.setattr(invariance_stats, "_MOMENT_CHUNK", 101)
    moments = invariance_stats._Moments.of(x)
    assert moments.r[0, 1] == pytest.approx(r, rel=1e-12)
    _, per_entry = moments.correlation_variance()
    assert per_entry[0, 1] == pytest.approx(variance, rel=1e-10)
    chunked = moments.correlation_deff(
        x, 0, 1, variance, ids, m, invariance_stats.event_chunks(ids, size=53)
    )
    assert chunked == pytest.approx(direct, rel=1e-9)
    assert chunked > 2.0  # strongly clustered
