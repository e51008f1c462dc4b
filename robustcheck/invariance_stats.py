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


@dataclass
class PairFigures:
    """The Pearson correlation of two features in each sample, and a test of their equality:
    ``z = (r_attacked - r_reference) / sqrt(V_ref / n_ref + V_att / n_att)`` with ``V`` the
    distribution-free asymptotic variance of ``sqrt(n) r`` (:func:`correlation_variance`)."""

    features: tuple[str, str]
    r_reference: float
    r_attacked: float
    variance_reference: float
    variance_attacked: float
    n_reference: int
    n_attacked: int

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


def measure(
    adv: AttackedSample, movable: Mapping[str, np.ndarray], bins: int = 20
) -> InvarianceFigures:
    """Invariance statistics of every perturbed input of an attacked sample, against the same
    events before the attack."""
    return compare(
        entries(adv.nominal, adv.real, adv.features),
        entries(adv.adversarial, adv.real, adv.features),
        adv.features,
        movable,
        bins,
    )


def compare(
    reference: Mapping[str, np.ndarray],
    attacked: Mapping[str, np.ndarray],
    features: Mapping[str, tuple[str, ...]],
    movable: Mapping[str, np.ndarray],
    bins: int = 20,
) -> InvarianceFigures:
    """Invariance statistics of the attacked entries against the reference entries, per input
    ((entries, features) arrays; the two may hold different events and sizes)."""
    out: list[FeatureFigures] = []
    pairs: list[PairFigures] = []
    corr_change, corr_pair, frobenius, n_entries = 0.0, ("", ""), 0.0, 0
    for name, names in features.items():
        nominal, perturbed = reference[name], attacked[name]
        n_entries = max(n_entries, len(nominal))
        cols = np.flatnonzero(movable[name])
        if len(cols) and len(nominal) and len(perturbed):
            ks = ks_2samp(nominal[:, cols], perturbed[:, cols])
            chi2 = chi2_homogeneity(nominal[:, cols], perturbed[:, cols], bins=bins)
            jsd = js_distance(nominal[:, cols], perturbed[:, cols], bins=bins)
            for i, col in enumerate(cols):
                out.append(
                    FeatureFigures(
                        names[col],
                        float(ks.statistic[i]),
                        float(ks.pvalue[i]),
                        float(chi2.pvalue[i]),
                        float(jsd[i]),
                        float(chi2.statistic[i]),
                        int(chi2.dof[i]),
                        len(nominal),
                        len(perturbed),
                    )
                )
        if len(names) > 1 and len(nominal) > 1 and len(perturbed) > 1:
            change = correlation_change(nominal, perturbed)
            if change.max_abs >= corr_change:
                corr_change = change.max_abs
                corr_pair = (names[change.argmax[0]], names[change.argmax[1]])
            frobenius = max(frobenius, change.relative_frobenius)
            pairs += _pairs(nominal, perturbed, names, movable[name])
    return InvarianceFigures(out, corr_change, corr_pair, frobenius, n_entries, pairs)


def _pairs(
    reference: np.ndarray, attacked: np.ndarray, names: tuple[str, ...], movable: np.ndarray
) -> list[PairFigures]:
    """Correlation tests of every pair of features of which at least one can move (a pair of
    frozen features cannot change) and neither is constant in the reference."""
    r_ref, v_ref = correlation_variance(reference)
    r_att, v_att = correlation_variance(attacked)
    constant = np.ptp(reference, axis=0) == 0
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if constant[i] or constant[j] or not (movable[i] or movable[j]):
                continue
            out.append(
                PairFigures(
                    (names[i], names[j]),
                    float(r_ref[i, j]),
                    float(r_att[i, j]),
                    float(v_ref[i, j]),
                    float(v_att[i, j]),
                    len(reference),
                    len(attacked),
                )
            )
    return out


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


def chi2_events_to_detect(statistic: float, dof: int, n_a: int, n_b: int, level: float) -> float:
    """Events per sample at which the binned chi-squared test (same bins) at ``level`` has its
    median at the critical value, for a paired statistic ``statistic`` measured on ``n_a`` and
    ``n_b`` entries: that statistic is the non-centrality at those sizes, and the
    non-centrality grows as the harmonic size ``n_a n_b / (n_a + n_b)`` (N / 2 for N and N)."""
    from scipy.optimize import brentq
    from scipy.stats import chi2, ncx2

    if dof < 1 or not statistic > 0 or not (n_a > 0 and n_b > 0):
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
