"""The invariance statistics of an attacked sample: per-feature KS, chi-squared and
Jensen-Shannon figures, the change of the correlations with a test of each pair, padding left
out, and how many events a test would need to see each measured shift (detectability).

Shared by the invariance check, the epsilon scans of every check and the report's histograms,
so it depends on no other robustcheck module but ``stats``: an attacked sample is anything
with the attributes of :class:`AttackedSample` (robustcheck.core.Adversaries has them).

:func:`measure` compares an attacked sample with the same events before the attack;
:func:`compare` compares any two sets of entries (:func:`entries` picks the real entries of
chosen events), which is how the invariance check compares an attacked half of the nominal
sample with the other, untouched half, inclusively and per control region.

Several entries per event (particle inputs: the constituents of a jet). The tests below count
entries, but the entries of one event are correlated (they share the jet), so counted as
independent they have too small p-values. Given the event of each entry (:func:`event_ids`),
:func:`compare` corrects every per-entry test by a design effect (Kish, *Survey Sampling*,
1965: the variance of an estimate under the event-level cluster sampling over its variance
under independent sampling of as many entries), estimated from the data with events as
clusters (the with-replacement, ratio-estimator variance of a proportion of entries from
per-event totals; Cochran, *Sampling Techniques*, 3rd ed., 1977, sec. 6.2 and 11.8):

- binned chi-squared: the Rao-Scott correction (Rao and Scott, Ann. Statist. 12 (1984) 46;
  JASA 76 (1981) 221). With ``lambda_k`` the eigenvalues of ``Omega^-1 V`` (V the design
  covariance of the difference of the two samples' bin proportions, from per-event bin
  counts; Omega its multinomial covariance under homogeneity), ``delta`` their mean (the
  first-order correction: the Pearson statistic / delta has the mean of chi2(K - 1) under no
  change; ``delta = sum_k (1 - p_k) d_k / (K - 1)`` with ``d_k`` the bins' design effects) and
  ``1 + a^2`` their mean square over ``delta^2``, the p-value is the second-order
  (Satterthwaite) one: statistic / (delta (1 + a^2)) on (K - 1) / (1 + a^2) degrees of
  freedom. The first order alone was too liberal when the bins' design effects differ (tails
  of a jet-level spread are more clustered): 11% false alarms at 5% on the synthetic jets of
  tests/test_invariance_clusters.py, 3.8% with the second order. The design effects are
  measured on the test's quantile bins before sparse bins are merged (merging happens only in
  small samples).
- KS: effective sizes ``n / deff`` per sample, with ``deff`` the mean design effect of the
  empirical CDF at the same quantiles (the KS distance is the largest CDF difference, so its
  spread scales as the CDF's; conservative on the synthetic jets: 1.9% false alarms at 5%).
- correlation z tests: the variance of ``sqrt(n) r`` from the event totals of its influence
  function ``u v - r (u^2 + v^2) / 2`` (cluster-robust sandwich) instead of from the entries.

A design effect is held at no less than 1 (entries anti-correlated within an event, e.g.
fractions that sum to one, keep the per-entry test, which is then conservative), and inputs
with at most one entry per event are not corrected at all: their figures are exactly those
of the per-entry tests (scipy's). The estimates need many events with several entries each;
with few events (tens) they are noisy, and the corrected tests are approximate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from robustcheck.stats import (
    chi2_homogeneity,
    correlation_change,
    js_distance,
    ks_2samp,
    pearson_matrix,
)


class AttackedSample(Protocol):
    """What the statistics read of an attack's outcome (tensors, per perturbed input)."""

    features: Mapping[str, tuple[str, ...]]
    nominal: Mapping[str, Any]
    adversarial: Mapping[str, Any]
    real: Mapping[str, Any]


@dataclass
class FeatureFigures:
    feature: str
    ks_statistic: float
    ks_pvalue: float
    chi2_pvalue: float
    jsd: float
    chi2_statistic: float = float("nan")
    chi2_dof: int = 0
    n_reference: int = 0  # entries of the reference (nominal) sample
    n_attacked: int = 0  # entries of the attacked sample
    # design effects of several entries per event (module doc), 1 with one entry per event:
    # KS effective sizes are n / ks_deff; chi2_statistic is the Pearson one / chi2_deff, and
    # its p-value that of chi2_statistic / chi2_spread on chi2_dof / chi2_spread dof
    ks_deff_reference: float = 1.0
    ks_deff_attacked: float = 1.0
    chi2_deff: float = 1.0
    entries_per_event: float = 1.0  # of the two samples together
    chi2_spread: float = 1.0
    input: str = ""  # the input the feature belongs to

    @property
    def ks_deff(self) -> float:
        """The KS test's design effect: the factor its effective combined size
        ``n_a n_b / (n_a + n_b)`` is below the entries' one."""
        na, nb = self.n_reference, self.n_attacked
        if not (na > 0 and nb > 0):
            return 1.0
        entries = na * nb / (na + nb)
        ea, eb = na / self.ks_deff_reference, nb / self.ks_deff_attacked
        return float(entries / (ea * eb / (ea + eb)))


@dataclass
class PairFigures:
    """The Pearson correlation of two features in each sample, and a test of their equality:
    ``z = (r_attacked - r_reference) / sqrt(V_ref / n_ref + V_att / n_att)`` with ``V`` the
    distribution-free asymptotic variance of ``sqrt(n) r`` (:func:`correlation_variance`); with
    several entries per event ``V`` is the cluster-robust one (events as clusters, module doc)
    and ``deff_*`` its ratio to the per-entry one."""

    features: tuple[str, str]
    r_reference: float
    r_attacked: float
    variance_reference: float
    variance_attacked: float
    n_reference: int
    n_attacked: int
    deff_reference: float = 1.0
    deff_attacked: float = 1.0
    input: str = ""  # the input the features belong to

    @property
    def change(self) -> float:
        return abs(self.r_attacked - self.r_reference)

    @property
    def standard_error(self) -> float:
        return float(
            np.sqrt(
                self.variance_reference / max(self.n_reference, 1)
                + self.variance_attacked / max(self.n_attacked, 1)
            )
        )

    @property
    def pvalue(self) -> float:
        from scipy.stats import norm

        se = self.standard_error
        if not se > 0:
            return 1.0 if self.change == 0 else float("nan")
        return float(2.0 * norm.sf(self.change / se))


@dataclass
class InvarianceFigures:
    """Everything the invariance check measures on one attacked sample."""

    features: list[FeatureFigures]
    correlation_change: float
    correlation_pair: tuple[str, str]
    correlation_frobenius: float
    n_entries: int
    pairs: list[PairFigures] = field(default_factory=list)

    @property
    def min_ks(self) -> FeatureFigures:
        return min(self.features, key=lambda f: f.ks_pvalue)

    @property
    def min_chi2(self) -> FeatureFigures:
        return min(self.features, key=lambda f: f.chi2_pvalue)

    @property
    def max_jsd(self) -> FeatureFigures:
        return max(self.features, key=lambda f: f.jsd)


def real_entries(adv: AttackedSample, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(entries, features) float64 arrays of an input, nominal and attacked, padding left out
    (before the float64 copy)."""
    features = len(adv.features[name])
    real = adv.real[name]
    nominal = real_rows(adv.nominal[name], real, features).astype(np.float64, copy=False)
    perturbed = real_rows(adv.adversarial[name], real, features).astype(np.float64, copy=False)
    return nominal, perturbed


# events copied at a time into the array of real entries (a chosen block's values are copied
# once before the padding is dropped: 8,192 jets of 64 x 4 float32 values are 8 MB)
_ENTRY_BLOCK = 8192


def real_rows(x: Any, real: Any, features: int, events: np.ndarray | None = None) -> np.ndarray:
    """The (entries, features) array of the real entries of ``x`` (events by entries by
    features, or events by features) at the chosen events (positions; None: all), in the
    inputs' own dtype (float32: the statistics are exact on it, see robustcheck.stats),
    filled block by block of events so that no other copy of the whole input is made."""
    values = np.asarray(x)
    per_event = int(np.prod(values.shape[1:], dtype=np.int64)) // features
    rows = values.reshape(len(values), per_event, features)
    mask = np.asarray(real, dtype=bool).reshape(len(values), per_event)
    n = len(rows) if events is None else len(events)
    chosen = None if events is None else np.asarray(events, dtype=np.int64)

    def block(start: int) -> slice | np.ndarray:
        stop = min(start + _ENTRY_BLOCK, n)
        return slice(start, stop) if chosen is None else chosen[start:stop]

    starts = range(0, n, _ENTRY_BLOCK)
    out = np.empty((sum(int(mask[block(i)].sum()) for i in starts), features), rows.dtype)
    filled = 0
    for i in starts:
        picked = rows[block(i)][mask[block(i)]]
        out[filled : filled + len(picked)] = picked
        filled += len(picked)
    return out


def entries(
    tensors: Mapping[str, Any],
    real: Mapping[str, Any],
    features: Mapping[str, tuple[str, ...]],
    events: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per input, the (entries, features) array (see real_rows) of the real entries of the
    chosen events (positions along the first axis; None: all), padding left out."""
    out = {}
    for name, names in features.items():
        out[name] = real_rows(tensors[name], real[name], len(names), events)
    return out


def event_ids(
    real: Mapping[str, Any],
    features: Mapping[str, tuple[str, ...]],
    events: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per input, the event of each entry :func:`entries` returns for the same arguments (its
    position among the chosen events), as int32 (int64 beyond 2**31 events): the clusters of
    the design effects."""
    out = {}
    for name in features:
        mask = real[name]
        if events is not None:
            mask = mask[torch_index(events)]
        array = np.asarray(mask.numpy(), dtype=bool)
        flat = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
        dtype = np.int32 if flat.shape[0] < 2**31 else np.int64  # half the memory
        out[name] = np.repeat(np.arange(flat.shape[0], dtype=dtype), flat.sum(axis=1))
    return out


def torch_index(events: np.ndarray) -> Any:
    """Event positions as a torch index (imported here: this module stays torch-free to load)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(events, dtype=np.int64))


def measure(
    adv: AttackedSample, movable: Mapping[str, np.ndarray], bins: int = 20
) -> InvarianceFigures:
    """Invariance statistics of every perturbed input of an attacked sample, against the same
    events before the attack (corrected for several entries per event, module doc)."""
    ids = event_ids(adv.real, adv.features)
    return compare(
        entries(adv.nominal, adv.real, adv.features),
        entries(adv.adversarial, adv.real, adv.features),
        adv.features,
        movable,
        bins,
        reference_events=ids,
        attacked_events=ids,
    )


def compare(
    reference: Mapping[str, np.ndarray],
    attacked: Mapping[str, np.ndarray],
    features: Mapping[str, tuple[str, ...]],
    movable: Mapping[str, np.ndarray],
    bins: int = 20,
    *,
    reference_events: Mapping[str, np.ndarray] | None = None,
    attacked_events: Mapping[str, np.ndarray] | None = None,
) -> InvarianceFigures:
    """Invariance statistics of the attacked entries against the reference entries, per input
    ((entries, features) arrays; the two may hold different events and sizes).

    With the event of each entry (``*_events``, :func:`event_ids`), the tests of an input with
    several entries in some event are corrected for their correlation (module doc); without,
    or with at most one entry per event, they are the per-entry tests."""
    out: list[FeatureFigures] = []
    pairs: list[PairFigures] = []
    corr_change, corr_pair, frobenius, n_entries = 0.0, ("", ""), 0.0, 0
    for name, names in features.items():
        nominal, perturbed = reference[name], attacked[name]
        n_entries = max(n_entries, len(nominal))
        clusters = _clusters(name, nominal, perturbed, reference_events, attacked_events)
        per_event = 1.0 if clusters is None else clusters.entries_per_event
        cols = np.flatnonzero(movable[name])
        if len(cols) and len(nominal) and len(perturbed):
            ref_cols, att_cols = _columns(nominal, cols), _columns(perturbed, cols)
            ks = ks_2samp(ref_cols, att_cols)
            chi2 = chi2_homogeneity(ref_cols, att_cols, bins=bins)
            jsd = js_distance(ref_cols, att_cols, bins=bins)
            ks_p, chi2_stat, chi2_p = ks.pvalue, chi2.statistic, chi2.pvalue
            ones = np.ones(len(cols))
            deff_ref, deff_att, delta, spread = ones, ones, ones, ones
            if clusters is not None:
                deff_ref, deff_att, delta, spread = design_effects(
                    ref_cols, att_cols, clusters, bins
                )
                ks_p = ks_pvalue_effective(
                    ks.statistic, len(nominal) / deff_ref, len(perturbed) / deff_att
                )
                chi2_stat, chi2_p = rao_scott(chi2.statistic, chi2.dof, delta, spread)
            for i, col in enumerate(cols):
                out.append(
                    FeatureFigures(
                        names[col],
                        float(ks.statistic[i]),
                        float(ks_p[i]),
                        float(chi2_p[i]),
                        float(jsd[i]),
                        float(chi2_stat[i]),
                        int(chi2.dof[i]),
                        len(nominal),
                        len(perturbed),
                        float(deff_ref[i]),
                        float(deff_att[i]),
                        float(delta[i]),
                        per_event,
                        float(spread[i]),
                        name,
                    )
                )
        if len(names) > 1 and len(nominal) > 1 and len(perturbed) > 1:
            change = correlation_change(nominal, perturbed)
            if change.max_abs >= corr_change:
                corr_change = change.max_abs
                corr_pair = (names[change.argmax[0]], names[change.argmax[1]])
            frobenius = max(frobenius, change.relative_frobenius)
            pairs += _pairs(
                nominal, perturbed, names, movable[name], clusters, name, change.nominal,
                change.perturbed,
            )  # fmt: skip
    return InvarianceFigures(out, corr_change, corr_pair, frobenius, n_entries, pairs)


def _columns(x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` (ascending) of x: a view when they are one run, else a copy."""
    if len(cols) and cols[-1] - cols[0] + 1 == len(cols):
        return x[:, int(cols[0]) : int(cols[-1]) + 1]
    return x[:, cols]


@dataclass
class Clusters:
    """The event (cluster) of each entry of both samples of one input, numbered 0.. per sample
    over the events that hold entries, and each sample's entries cut into chunks that keep
    every event whole (for per-event sums in bounded memory)."""

    reference: np.ndarray
    attacked: np.ndarray
    n_reference: int  # events with entries
    n_attacked: int
    reference_chunks: list[slice] = field(default_factory=list)
    attacked_chunks: list[slice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reference_chunks = self.reference_chunks or event_chunks(self.reference)
        if not self.attacked_chunks:
            same = self.attacked is self.reference
            self.attacked_chunks = self.reference_chunks if same else event_chunks(self.attacked)

    @property
    def entries_per_event(self) -> float:
        events = self.n_reference + self.n_attacked
        return (len(self.reference) + len(self.attacked)) / max(events, 1)


_CLUSTER_CHUNK = 1 << 18  # entries per chunk of the per-event sums


def _in_order(ids: np.ndarray) -> bool:
    """Whether the ids never decrease (checked a chunk at a time)."""
    for start in range(0, max(len(ids) - 1, 0), _CLUSTER_CHUNK):
        part = ids[start : start + _CLUSTER_CHUNK + 1]
        if (part[1:] < part[:-1]).any():
            return False
    return True


def event_chunks(ids: np.ndarray, size: int | None = None) -> list[slice]:
    """Slices of the entries, about ``size`` each, that never cut an event when the ids are in
    order (as :func:`event_ids` numbers them); otherwise one slice of everything."""
    size = size or _CLUSTER_CHUNK
    n = len(ids)
    if n <= size or not _in_order(ids):
        return [slice(0, n)]
    cuts = [0]
    while cuts[-1] + size < n:
        event = ids[cuts[-1] + size]
        cut = int(np.searchsorted(ids, event, side="left"))  # where that event starts
        if cut <= cuts[-1]:  # one event longer than a chunk: cut after it
            cut = int(np.searchsorted(ids, event, side="right"))
        cuts.append(cut)
    cuts.append(n)
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _dense(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """The ids renumbered 0.. over the distinct ones (order kept), and how many there are; the
    same array when it is already so (ids in order, as :func:`event_ids` gives, need no sort)."""
    if not len(ids):
        return ids.astype(np.int64), 0
    if not _in_order(ids):
        unique, codes = np.unique(ids, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), len(unique)
    step = ids[1:] != ids[:-1]
    distinct = int(step.sum()) + 1
    if ids[0] == 0 and ids[-1] == distinct - 1 and ids.dtype.kind == "i":
        return ids, distinct
    codes = np.empty(len(ids), dtype=np.int64)
    codes[0] = 0
    np.cumsum(step, out=codes[1:])
    return codes, distinct


def _clusters(
    name: str,
    reference: np.ndarray,
    attacked: np.ndarray,
    reference_events: Mapping[str, np.ndarray] | None,
    attacked_events: Mapping[str, np.ndarray] | None,
) -> Clusters | None:
    """The entries' events when some event of either sample holds several entries, else None
    (no correction)."""
    if reference_events is None or attacked_events is None:
        return None
    ref, att = reference_events.get(name), attacked_events.get(name)
    if ref is None or att is None:
        return None
    if len(ref) != len(reference) or len(att) != len(attacked):
        raise ValueError(
            f"input {name}: {len(ref)} and {len(att)} event ids for {len(reference)} and "
            f"{len(attacked)} entries"
        )
    ref_codes, n_ref = _dense(np.asarray(ref))
    att_codes, n_att = (ref_codes, n_ref) if att is ref else _dense(np.asarray(att))
    if n_ref == len(ref) and n_att == len(att):
        return None
    return Clusters(ref_codes, att_codes, n_ref, n_att)


def design_effects(
    reference: np.ndarray, attacked: np.ndarray, clusters: Clusters, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of the two (entries, features) samples: the KS design effect of each sample
    (mean over the reference's ``bins``-quantiles of the design effect of the empirical CDF
    there), and the Rao-Scott ``delta`` (mean generalised design effect, at least 1) and
    ``spread`` (``1 + a^2``, a the coefficient of variation of the generalised design effects)
    of the binned chi-squared on those bins (module doc)."""
    n_cols = reference.shape[1]
    ks_ref, ks_att = np.ones(n_cols), np.ones(n_cols)
    delta, spread = np.ones(n_cols), np.ones(n_cols)
    q = np.linspace(0.0, 1.0, bins + 1)
    samples = (
        (reference, clusters.reference, clusters.n_reference, clusters.reference_chunks),
        (attacked, clusters.attacked, clusters.n_attacked, clusters.attacked_chunks),
    )
    for j in range(n_cols):
        edges = np.unique(np.quantile(reference[:, j], q))[1:-1]
        k = len(edges) + 1
        if k < 2:
            continue
        cdf_deff, proportions, covariances, totals = [], [], [], []
        upper = np.triu(np.ones((k, k)))  # entries at or below each bin: counts @ upper
        for x, ids, m, chunks in samples:
            p, covariance, n = _binned_design(x[:, j], ids, m, chunks, edges)
            # the empirical CDF at the edges: design effects of the cumulative proportions
            cdf_variance = np.diag(upper.T @ covariance @ upper)[:-1]
            cdf = np.cumsum(p)[:-1]
            binomial = cdf * (1.0 - cdf) / n
            with np.errstate(divide="ignore", invalid="ignore"):
                d_cdf = np.where(binomial > 0, cdf_variance / binomial, np.nan)
            cdf_deff.append(_at_least_one(np.nanmean(d_cdf)) if np.isfinite(d_cdf).any() else 1.0)
            covariances.append(covariance)
            proportions.append(p)
            totals.append(n)
        ks_ref[j], ks_att[j] = cdf_deff
        delta[j], spread[j] = _rao_scott_factors(proportions, covariances, totals)
    return ks_ref, ks_att, delta, spread


def _binned_design(
    column: np.ndarray, ids: np.ndarray, m: int, chunks: list[slice], edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """The bin proportions ``p`` of one sample's column on ``edges``, the design covariance of
    them over its m events (``m / (m - 1) sum_i (y_i - m_i p)(y_i - m_i p)^T / n^2``, y_i the
    bin counts of event i, m_i its entries; the ratio estimator's, Cochran 6.2) and the
    entries n. The sums run over chunks of whole events; they are sums of integers, exact in
    float64, expanded as ``sum y y^T - s p^T - p s^T + sum m_i^2 p p^T`` with ``s = sum m_i
    y_i``."""
    k = len(edges) + 1
    cross, by_size = np.zeros((k, k)), np.zeros(k)
    size_square, per_bin = 0.0, np.zeros(k)
    for part in chunks:
        events = ids[part]
        lo, hi = int(events.min()), int(events.max()) + 1
        where = np.searchsorted(edges, column[part], side="right")
        where += (events - lo) * k
        counts = np.bincount(where, minlength=(hi - lo) * k).reshape(hi - lo, k)
        counts = counts.astype(np.float64)
        sizes = counts.sum(axis=1)
        cross += counts.T @ counts
        by_size += sizes @ counts
        size_square += float(sizes @ sizes)
        per_bin += counts.sum(axis=0)
    n = float(per_bin.sum())
    p = per_bin / n
    spread = cross - np.outer(by_size, p) - np.outer(p, by_size) + size_square * np.outer(p, p)
    return p, m / max(m - 1, 1) * spread / (n * n), n


def _rao_scott_factors(
    proportions: list[np.ndarray], covariances: list[np.ndarray], totals: list[float]
) -> tuple[float, float]:
    """``delta`` and ``1 + a^2`` of the two samples' bin proportions: the eigenvalues of
    ``Omega^-1 V`` over the non-empty bins less one, V the design (cluster) covariance of the
    difference of the proportions and Omega its multinomial covariance under homogeneity
    (Rao and Scott 1984): ``delta`` their mean (at least 1) and ``1 + a^2`` their mean square
    over the square of their mean (at least 1); (1, 1) when not estimable."""
    (p_a, p_b), (v_a, v_b), (n_a, n_b) = proportions, covariances, totals
    pooled = (p_a * n_a + p_b * n_b) / (n_a + n_b)
    used = np.flatnonzero(pooled > 0)[:-1]  # one bin less: the proportions sum to one
    if len(used) < 1:
        return 1.0, 1.0
    p = pooled[used]
    omega = (np.diag(p) - np.outer(p, p)) * (1.0 / n_a + 1.0 / n_b)
    design = (v_a + v_b)[np.ix_(used, used)]
    try:
        ratio = np.linalg.solve(omega, design)
    except np.linalg.LinAlgError:
        return 1.0, 1.0
    dims = len(used)
    mean = float(np.trace(ratio)) / dims
    if not (np.isfinite(mean) and mean > 1.0):
        return 1.0, 1.0
    square = float(np.trace(ratio @ ratio)) / dims
    return mean, max(square / (mean * mean), 1.0)


def _at_least_one(x: float) -> float:
    return float(x) if x > 1.0 else 1.0


def ks_pvalue_effective(
    statistic: np.ndarray, n_a: np.ndarray | float, n_b: np.ndarray | float
) -> np.ndarray:
    """The asymptotic two-sample KS p-value of distances ``statistic`` at (effective, possibly
    fractional) sizes ``n_a`` and ``n_b``: ``K(D sqrt(n_a n_b / (n_a + n_b)))``, the survival
    function of the Kolmogorov distribution (scipy.special.kolmogorov)."""
    from scipy.special import kolmogorov

    d = np.asarray(statistic, dtype=np.float64)
    a = np.broadcast_to(np.asarray(n_a, dtype=np.float64), d.shape)
    b = np.broadcast_to(np.asarray(n_b, dtype=np.float64), d.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = kolmogorov(d * np.sqrt(a * b / (a + b)))
    return np.where(np.isnan(d), np.nan, np.clip(p, 0.0, 1.0))


def rao_scott(
    statistic: np.ndarray, dof: np.ndarray, delta: np.ndarray, spread: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rao-Scott corrected chi-squared statistics ``statistic / delta`` (first order) and the
    p-values of the second-order (Satterthwaite) correction: ``statistic / (delta spread)`` on
    ``dof / spread`` degrees of freedom (1 where dof is 0, NaN kept)."""
    from scipy.stats import chi2

    corrected = np.asarray(statistic, dtype=np.float64) / delta
    dof = np.asarray(dof)
    df = np.maximum(dof, 1) / spread
    p = np.where(dof > 0, chi2.sf(corrected / spread, df), 1.0)
    return corrected, np.where(np.isnan(corrected), np.nan, p)


def _pairs(
    reference: np.ndarray,
    attacked: np.ndarray,
    names: tuple[str, ...],
    movable: np.ndarray,
    clusters: Clusters | None = None,
    input_name: str = "",
    r_reference: np.ndarray | None = None,
    r_attacked: np.ndarray | None = None,
) -> list[PairFigures]:
    """Correlation tests of every pair of features of which at least one can move (a pair of
    frozen features cannot change) and neither is constant in the reference; with clusters,
    on cluster-robust variances. The samples' correlation matrices are computed unless
    given (as :func:`correlation_change` returns them)."""
    ref, att = _Moments.of(reference, r_reference), _Moments.of(attacked, r_attacked)
    r_ref, v_ref = ref.correlation_variance()
    r_att, v_att = att.correlation_variance()
    constant = np.ptp(reference, axis=0) == 0
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if constant[i] or constant[j] or not (movable[i] or movable[j]):
                continue
            var_ref, var_att = float(v_ref[i, j]), float(v_att[i, j])
            deff_ref = deff_att = 1.0
            if clusters is not None:
                deff_ref = ref.correlation_deff(
                    reference, i, j, var_ref, clusters.reference, clusters.n_reference,
                    clusters.reference_chunks,
                )  # fmt: skip
                deff_att = att.correlation_deff(
                    attacked, i, j, var_att, clusters.attacked, clusters.n_attacked,
                    clusters.attacked_chunks,
                )  # fmt: skip
            out.append(
                PairFigures(
                    (names[i], names[j]),
                    float(r_ref[i, j]),
                    float(r_att[i, j]),
                    var_ref * deff_ref,
                    var_att * deff_att,
                    len(reference),
                    len(attacked),
                    deff_ref,
                    deff_att,
                    input_name,
                )
            )
    return out


_MOMENT_CHUNK = 1 << 16  # entries per float64 chunk of the moment sums


@dataclass
class _Moments:
    """Column means, standard deviations (population) and the standardised fourth-order
    moments ``m22[i, j] = E[u_i^2 u_j^2]`` and ``m31[i, j] = E[u_i^3 u_j]`` of an (entries,
    features) array, summed in float64 over chunks (no float64 copy of the whole array)."""

    r: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    m22: np.ndarray
    m31: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, r: np.ndarray | None = None) -> _Moments:
        """The moments of x, with its correlation matrix ``r`` when already known."""
        n, f = x.shape
        chunks = [slice(i, i + _MOMENT_CHUNK) for i in range(0, n, _MOMENT_CHUNK)]
        total = np.zeros(f)
        for part in chunks:
            total += x[part].sum(axis=0, dtype=np.float64)
        mean = total / n
        squares, cross, cubes = np.zeros(f), np.zeros((f, f)), np.zeros((f, f))
        for part in chunks:
            centred = x[part].astype(np.float64)
            centred -= mean
            power = centred * centred
            squares += power.sum(axis=0)
            cross += power.T @ power
            power *= centred
            cubes += power.T @ centred
        std = np.sqrt(squares / n)
        scale = np.where(std == 0, 1.0, std)
        m22 = cross / n / np.outer(scale**2, scale**2)
        m31 = cubes / n / np.outer(scale**3, scale)
        return cls(pearson_matrix(x) if r is None else r, mean, std, m22, m31)

    def correlation_variance(self) -> tuple[np.ndarray, np.ndarray]:
        """The correlations and the asymptotic variance of ``sqrt(n) (r - rho)`` (delta
        method): ``rho^2 / 4 (m40 + m04 + 2 m22) - rho (m31 + m13) + m22``."""
        r, m22, m31 = self.r, self.m22, self.m31
        m40 = np.diag(m22)
        variance = r * r / 4.0 * (m40[:, None] + m40[None, :] + 2.0 * m22) - r * (m31 + m31.T) + m22
        return r, np.maximum(variance, 0.0)

    def correlation_deff(
        self,
        x: np.ndarray,
        i: int,
        j: int,
        variance: float,
        ids: np.ndarray,
        events: int,
        chunks: list[slice],
    ) -> float:
        """Design effect of the correlation of columns i and j: the cluster-robust variance
        of ``sqrt(n) r`` (event totals of the influence function ``u v - r (u^2 + v^2) / 2``
        of the standardised columns) over the per-entry one, at least 1."""
        if not variance > 0 or events < 2 or not (self.std[i] > 0 and self.std[j] > 0):
            return 1.0
        r = float(self.r[i, j])
        totals = np.zeros(events)
        for part in chunks:
            u = (x[part, i].astype(np.float64) - self.mean[i]) / self.std[i]
            v = (x[part, j].astype(np.float64) - self.mean[j]) / self.std[j]
            influence = u * v - r * (u * u + v * v) / 2.0
            owners = ids[part]
            lo, hi = int(owners.min()), int(owners.max()) + 1
            totals[lo:hi] += np.bincount(owners - lo, weights=influence, minlength=hi - lo)
        clustered = events / (events - 1) * float(totals @ totals) / len(x)
        return _at_least_one(clustered / variance)


def correlation_variance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations of the columns of ``x`` and the asymptotic variance of
    ``sqrt(n) (r - rho)`` for any distribution with finite fourth moments (delta method):
    ``rho^2 / 4 (m40 + m04 + 2 m22) - rho (m31 + m13) + m22`` with ``mij = E[u^i v^j]`` of the
    standardised columns u, v; for a bivariate normal it is ``(1 - rho^2)^2`` (Fisher's)."""
    return _Moments.of(np.asarray(x)).correlation_variance()


# --------------------------------------------------------------------------------------------
# Detectability: how many events per sample a test needs to see the attack's shift.
#
# The shift is measured on the same events before and after the attack (paired), so it holds
# the attack's displacement without the sampling noise of two independent samples: nothing
# moved gives no shift and no events_to_detect, however small the sample. It is projected to N
# events per sample on two independent samples (nominal and attacked) at the test's ``level``:
# KS, the N at which the critical distance equals the shift (the test then fires in at least
# half of such samples, more when the shift is broad: 80% for a shift of 30% of the events,
# tests/test_detectability.py); chi-squared, the N at which the median statistic (non-central,
# same bins) reaches the critical value (fires in half); correlations, the N at which the
# change over its standard error reaches the z test's critical value (fires in half).
# --------------------------------------------------------------------------------------------


def ks_critical(level: float, n_a: float, n_b: float) -> float:
    """The two-sample KS distance above which the asymptotic test at ``level`` rejects:
    ``K^-1(level) sqrt((n_a + n_b) / (n_a n_b))`` with K the Kolmogorov distribution."""
    from scipy.special import kolmogi

    return float(kolmogi(level) * np.sqrt((n_a + n_b) / (n_a * n_b)))


def ks_events_to_detect(distance: float, level: float) -> float:
    """Events per sample (N and N) at which the KS test at ``level`` has its critical distance
    at ``distance`` (the distance of the two CDFs): ``2 (K^-1(level) / distance)^2``. Inf for
    no shift."""
    from scipy.special import kolmogi

    if not distance > 0:
        return float("inf")
    return float(2.0 * (kolmogi(level) / distance) ** 2)


def chi2_events_to_detect(statistic: float, dof: float, n_a: int, n_b: int, level: float) -> float:
    """Events per sample at which the binned chi-squared test (same bins) at ``level`` has its
    median at the critical value, for a paired statistic ``statistic`` measured on ``n_a`` and
    ``n_b`` entries: that statistic is the non-centrality at those sizes, and the
    non-centrality grows as the harmonic size ``n_a n_b / (n_a + n_b)`` (N / 2 for N and N).
    ``dof`` may be fractional (the Rao-Scott corrected test of several entries per event)."""
    from scipy.optimize import brentq
    from scipy.stats import chi2, ncx2

    if not dof > 0 or not statistic > 0 or not (n_a > 0 and n_b > 0):
        return float("inf")
    critical = chi2.isf(level, dof)
    needed = brentq(lambda lam: ncx2.median(dof, lam) - critical, 1e-9, 4.0 * critical + 10.0 * dof)
    harmonic = n_a * n_b / (n_a + n_b)
    return float(2.0 * harmonic * needed / statistic)


def correlation_events_to_detect(pair: PairFigures, level: float) -> float:
    """Events per sample at which the z test of two correlations at ``level`` sees the pair's
    change with probability 1/2: ``(V_ref + V_att) (z_{level/2} / change)^2``."""
    from scipy.stats import norm

    if not pair.change > 0:
        return float("inf")
    z = float(norm.isf(level / 2.0))
    return float((pair.variance_reference + pair.variance_attacked) * (z / pair.change) ** 2)
