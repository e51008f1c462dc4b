"""Check ``invariance``: the attacked sample's marginals and correlations match the nominal.

Per movable feature: two-sample KS p-value, binned chi-squared p-value (quantile bins of the
nominal sample, sparse bins merged) and Jensen-Shannon distance; per input: the largest change
of a Pearson correlation and the relative Frobenius norm of the change. Padded particle
entries are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.core import Adversaries
from robustcheck.result import CheckResult
from robustcheck.stats import chi2_homogeneity, correlation_change, js_distance, ks_2samp
from robustcheck.stream import KEEP_SEED


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


def real_entries(adv: Adversaries, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(entries, features) float64 arrays of an input, nominal and attacked, padding left out
    (before the float64 copy)."""
    features = len(adv.features[name])
    real = adv.real[name].reshape(-1)
    nominal = adv.nominal[name].reshape(-1, features)[real].double().numpy()
    perturbed = adv.adversarial[name].reshape(-1, features)[real].double().numpy()
    return nominal, perturbed


def measure(adv: Adversaries, movable: dict[str, np.ndarray], bins: int = 20) -> InvarianceFigures:
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


class Invariance(Check):
    def evaluate(self) -> CheckResult:
        adv = self.run.adversaries(self.options["attack"])
        movable = {name: env.movable.numpy() for name, env in self.run.envelope.inputs.items()}
        figures = measure(adv, movable, int(self.options["bins"]))
        failures = self._failures(figures)
        o = self.options
        record: dict[str, float | int | str] = {
            "n_entries": figures.n_entries,
            "correlation_change": figures.correlation_change,
            "correlation_frobenius": figures.correlation_frobenius,
            "seed": adv.seed,
            "epsilon": adv.epsilon,
        }
        if figures.features:
            record.update(
                min_ks_pvalue=figures.min_ks.ks_pvalue,
                min_ks_feature=figures.min_ks.feature,
                min_chi2_pvalue=figures.min_chi2.chi2_pvalue,
                min_chi2_feature=figures.min_chi2.feature,
                max_jsd=figures.max_jsd.jsd,
                max_jsd_feature=figures.max_jsd.feature,
            )
        for key in (
            "ks_min_pvalue",
            "chi2_min_pvalue",
            "max_jsd",
            "max_correlation_change",
            "max_correlation_frobenius",
        ):
            if o[key] is not None:
                record[f"threshold_{key}"] = o[key]
        head = f"attacked sample ({adv.fooled.sum():,} of {adv.n_events:,} events fooled)"
        if adv.kept is not None:
            record["n_events_tested"] = len(adv.kept)
            record["keep_seed"] = KEEP_SEED
        if failures:
            summary = f"{head} differs from nominal: {'; '.join(failures)} | attack "
        else:
            summary = f"{head} is statistically unchanged | attack "
        sampled = [f"distributions compared {adv.kept_note()}"] if adv.kept is not None else []
        details = [
            *adv.warnings,
            *sampled,
            *self._table(figures),
            *self.scan_details(adv.attack),
        ]
        return self.result(
            not failures,
            summary + adv.description,
            figures=record,
            details=details,
            attack=adv.description,
        )

    def _failures(self, figures: InvarianceFigures) -> list[str]:
        o = self.options
        out = []
        per_feature = ("ks_min_pvalue", "chi2_min_pvalue", "max_jsd")
        if not figures.features and any(o[key] is not None for key in per_feature):
            out.append(
                "no movable feature to test (every feature is frozen, integer or a "
                "placeholder), so the per-feature thresholds cannot be checked"
            )
        if figures.features and o["ks_min_pvalue"] is not None:
            worst = figures.min_ks
            if worst.ks_pvalue < o["ks_min_pvalue"]:
                out.append(
                    f"KS p-value {worst.ks_pvalue:.3g} < min {o['ks_min_pvalue']:g} for "
                    f"{worst.feature}"
                )
        if figures.features and o["chi2_min_pvalue"] is not None:
            worst = figures.min_chi2
            if worst.chi2_pvalue < o["chi2_min_pvalue"]:
                out.append(
                    f"chi2 p-value {worst.chi2_pvalue:.3g} < min "
                    f"{o['chi2_min_pvalue']:g} for {worst.feature}"
                )
        if figures.features and o["max_jsd"] is not None and figures.max_jsd.jsd > o["max_jsd"]:
            worst = figures.max_jsd
            out.append(f"JS distance {worst.jsd:.3g} > max {o['max_jsd']:g} for {worst.feature}")
        limit = o["max_correlation_change"]
        if limit is not None and figures.correlation_change > limit:
            a, b = figures.correlation_pair
            out.append(
                f"correlation change {figures.correlation_change:.3g} ({a}, {b}) > max {limit:g}"
            )
        limit = o["max_correlation_frobenius"]
        if limit is not None and figures.correlation_frobenius > limit:
            out.append(
                f"relative Frobenius change of correlations "
                f"{figures.correlation_frobenius:.3g} > max {limit:g}"
            )
        return out

    @staticmethod
    def _table(figures: InvarianceFigures, rows: int = 5) -> list[str]:
        worst = sorted(figures.features, key=lambda f: f.ks_pvalue)[:rows]
        if not worst:
            return []
        width = max(len(f.feature) for f in worst)
        lines = [f"{'feature':<{width}}  KS D      KS p      chi2 p    JSD"]
        lines += [
            f"{f.feature:<{width}}  {f.ks_statistic:<8.3g}  {f.ks_pvalue:<8.3g}  "
            f"{f.chi2_pvalue:<8.3g}  {f.jsd:.3g}"
            for f in worst
        ]
        return lines
