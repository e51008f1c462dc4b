"""The invariance statistics of an attacked sample: per-feature KS, chi-squared and
Jensen-Shannon figures and the change of the correlations, padding left out.

Shared by the invariance check, the epsilon scans of every check and the report's histograms,
so it depends on no other robustcheck module but ``stats``: an attacked sample is anything
with the attributes of :class:`AttackedSample` (robustcheck.core.Adversaries has them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from robustcheck.stats import chi2_homogeneity, correlation_change, js_distance, ks_2samp


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


@dataclass
class InvarianceFigures:
    """Everything the invariance check measures on one attacked sample."""

    features: list[FeatureFigures]
    correlation_change: float
    correlation_pair: tuple[str, str]
    correlation_frobenius: float
    n_entries: int

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
    real = adv.real[name].reshape(-1)
    nominal = adv.nominal[name].reshape(-1, features)[real].double().numpy()
    perturbed = adv.adversarial[name].reshape(-1, features)[real].double().numpy()
    return nominal, perturbed


def measure(
    adv: AttackedSample, movable: Mapping[str, np.ndarray], bins: int = 20
) -> InvarianceFigures:
    """Invariance statistics of every perturbed input of an attacked sample."""
    features: list[FeatureFigures] = []
    corr_change, corr_pair, frobenius, n_entries = 0.0, ("", ""), 0.0, 0
    for name, names in adv.features.items():
        nominal, perturbed = real_entries(adv, name)
        n_entries = max(n_entries, len(nominal))
        cols = np.flatnonzero(movable[name])
        if len(cols):
            ks = ks_2samp(nominal[:, cols], perturbed[:, cols])
            chi2 = chi2_homogeneity(nominal[:, cols], perturbed[:, cols], bins=bins)
            jsd = js_distance(nominal[:, cols], perturbed[:, cols], bins=bins)
            for i, col in enumerate(cols):
                features.append(
                    FeatureFigures(
                        names[col],
                        float(ks.statistic[i]),
                        float(ks.pvalue[i]),
                        float(chi2.pvalue[i]),
                        float(jsd[i]),
                    )
                )
        if len(names) > 1:
            change = correlation_change(nominal, perturbed)
            if change.max_abs >= corr_change:
                corr_change = change.max_abs
                corr_pair = (names[change.argmax[0]], names[change.argmax[1]])
            frobenius = max(frobenius, change.relative_frobenius)
    return InvarianceFigures(features, corr_change, corr_pair, frobenius, n_entries)
