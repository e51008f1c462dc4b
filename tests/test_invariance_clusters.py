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
    assert empty.dtype == np.int64 and len(empty) == 0


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
