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


# events copied at a time into the array of real entries
_ENTRY_BLOCK = 65536


def real_rows(x: Any, real: Any, features: int, events: np.ndarray | None = None) -> np.ndarray:
    """The (entries, features) array of the real entries of ``x`` (events by entries by
    features, or events by features) at the chosen events (positions; None: all), in the
    inputs' own dtype (float32: the statistics are exact on it, see robustcheck.stats),
    filled block by block of events so that no other copy of the whole input is made."""
    values = np.asarray(x)
    per_event = int(np.prod(values.shape[1:], dtype=np.int64)) // features
    rows = values.reshape(len(values), per_event, features)
    mask = np.asarray(real, dtype=bool).reshape(len(values), per_event)
    chosen = np.arange(len(rows)) if events is None else np.asarray(events, dtype=np.int64)
    blocks = [chosen[i : i + _ENTRY_BLOCK] for i in range(0, len(chosen), _ENTRY_BLOCK)]
    out = np.empty((sum(int(mask[block].sum()) for block in blocks), features), rows.dtype)
    filled = 0
    for block in blocks:
        picked = rows[block][mask[block]]
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
    position among the chosen events), as int64: the clusters of the design effects."""
    out = {}
    for name in features:
        mask = real[name]
        if events is not None:
            mask = mask[torch_index(events)]
        array = np.asarray(mask.numpy(), dtype=bool)
        flat = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
        rows = np.broadcast_to(np.arange(flat.shape[0])[:, None], flat.shape)
        out[name] = rows[flat].astype(np.int64)
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
            ks = ks_2samp(nominal[:, cols], perturbed[:, cols])
            chi2 = chi2_homogeneity(nominal[:, cols], perturbed[:, cols], bins=bins)
            jsd = js_distance(nominal[:, cols], perturbed[:, cols], bins=bins)
            ks_p, chi2_stat, chi2_p = ks.pvalue, chi2.statistic, chi2.pvalue
            ones = np.ones(len(cols))
            deff_ref, deff_att, delta, spread = ones, ones, ones, ones
            if clusters is not None:
                deff_ref, deff_att, delta, spread = design_effects(
                    nominal[:, cols], perturbed[:, cols], clusters, bins
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
            pairs += _pairs(nominal, perturbed, names, movable[name], clusters, name)
    return InvarianceFigures(out, corr_change, corr_pair, frobenius, n_entries, pairs)


@dataclass
class Clusters:
    """The event (cluster) of each entry of both samples of one input, numbered 0.. per sample
    over the events that hold entries."""

    reference: np.ndarray
    attacked: np.ndarray
    n_reference: int  # events with entries
    n_attacked: int

    @property
    def entries_per_event(self) -> float:
        events = self.n_reference + self.n_attacked
        return (len(self.reference) + len(self.attacked)) / max(events, 1)


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
    ref_u, ref_c = np.unique(ref, return_inverse=True)
    att_u, att_c = np.unique(att, return_inverse=True)
    if len(ref_u) == len(ref) and len(att_u) == len(att):
        return None
    return Clusters(
        ref_c.reshape(-1).astype(np.int64),
        att_c.reshape(-1).astype(np.int64),
        len(ref_u),
        len(att_u),
    )


def proportion_deff(counts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Design effects of proportions of entries from per-event counts: ``counts`` (events, K)
    entries of each event in each of K classes, ``sizes`` (events,) entries of each event.

    Returns the proportions ``p_k`` and ``d_k = v_k / (p_k (1 - p_k) / n)``, with ``v_k =
    m / (m - 1) sum_i (y_ik - p_k m_i)^2 / n^2`` the ratio estimator's variance over m events
    (NaN where ``p_k`` is 0 or 1)."""
    n = float(sizes.sum())
    m = len(sizes)
    p = counts.sum(axis=0) / n
    resid = counts - sizes[:, None] * p[None, :]
    v = m / max(m - 1, 1) * np.einsum("ik,ik->k", resid, resid) / (n * n)
    binomial = p * (1.0 - p) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(binomial > 0, v / binomial, np.nan)
    return p, d


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
        (reference, clusters.reference, clusters.n_reference),
        (attacked, clusters.attacked, clusters.n_attacked),
    )
    sizes = [np.bincount(ids, minlength=m).astype(np.float64) for _, ids, m in samples]
    for j in range(n_cols):
        edges = np.unique(np.quantile(reference[:, j], q))[1:-1]
        k = len(edges) + 1
        if k < 2:
            continue
        cdf_deff, proportions, covariances, totals = [], [], [], []
        for (x, ids, m), size in zip(samples, sizes, strict=True):
            where = np.searchsorted(edges, x[:, j], side="right")
            counts = np.bincount(ids * k + where, minlength=m * k).reshape(m, k)
            counts = counts.astype(np.float64)
            _, d_cdf = proportion_deff(np.cumsum(counts, axis=1)[:, :-1], size)
            cdf_deff.append(_at_least_one(np.nanmean(d_cdf)) if np.isfinite(d_cdf).any() else 1.0)
            n = float(size.sum())
            p = counts.sum(axis=0) / n
            resid = counts - size[:, None] * p[None, :]
            covariances.append(m / max(m - 1, 1) * (resid.T @ resid) / (n * n))
            proportions.append(p)
            totals.append(n)
        ks_ref[j], ks_att[j] = cdf_deff
        delta[j], spread[j] = _rao_scott_factors(proportions, covariances, totals)
    return ks_ref, ks_att, delta, spread


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
) -> list[PairFigures]:
    """Correlation tests of every pair of features of which at least one can move (a pair of
    frozen features cannot change) and neither is constant in the reference; with clusters,
    on cluster-robust variances."""
    r_ref, v_ref = correlation_variance(reference)
    r_att, v_att = correlation_variance(attacked)
    constant = np.ptp(reference, axis=0) == 0
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if constant[i] or constant[j] or not (movable[i] or movable[j]):
                continue
            var_ref, var_att = float(v_ref[i, j]), float(v_att[i, j])
            deff_ref = deff_att = 1.0
            if clusters is not None:
                deff_ref = _correlation_deff(
                    reference, i, j, r_ref[i, j], var_ref, clusters.reference, clusters.n_reference
                )
                deff_att = _correlation_deff(
                    attacked, i, j, r_att[i, j], var_att, clusters.attacked, clusters.n_attacked
                )
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


def _correlation_deff(
    x: np.ndarray, i: int, j: int, r: float, variance: float, ids: np.ndarray, events: int
) -> float:
    """Design effect of the correlation of columns i and j: the cluster-robust variance of
    ``sqrt(n) r`` (event totals of the influence function ``u v - r (u^2 + v^2) / 2`` of the
    standardised columns) over the per-entry one, at least 1."""
    if not variance > 0 or events < 2:
        return 1.0
    u, v = x[:, i], x[:, j]
    su, sv = u.std(), v.std()
    if not (su > 0 and sv > 0):
        return 1.0
    u = (u - u.mean()) / su
    v = (v - v.mean()) / sv
    totals = np.bincount(ids, weights=u * v - r * (u * u + v * v) / 2.0, minlength=events)
    clustered = events / (events - 1) * float(totals @ totals) / len(x)
    return _at_least_one(clustered / variance)


def correlation_variance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations of the columns of ``x`` and the asymptotic variance of
    ``sqrt(n) (r - rho)`` for any distribution with finite fourth moments (delta method):
    ``rho^2 / 4 (m40 + m04 + 2 m22) - rho (m31 + m13) + m22`` with ``mij = E[u^i v^j]`` of the
    standardised columns u, v; for a bivariate normal it is ``(1 - rho^2)^2`` (Fisher's)."""
    r = pearson_matrix(x)
    z = np.array(x, dtype=np.float64)  # the moments in float64, on a copy centred in place
    z -= z.mean(axis=0)
    std = z.std(axis=0)
    std[std == 0] = 1.0
    z /= std
    n = len(z)
    z2 = z * z
    m22 = z2.T @ z2 / n
    z2 *= z  # now z**3, in place: one full-size copy fewer
    m31 = z2.T @ z / n
    del z, z2
    m40 = np.diag(m22)
    variance = r * r / 4.0 * (m40[:, None] + m40[None, :] + 2.0 * m22) - r * (m31 + m31.T) + m22
    return r, np.maximum(variance, 0.0)


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
