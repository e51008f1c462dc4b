"""Check ``invariance``: the attacked sample's marginals and correlations match the nominal.

Per movable feature: two-sample KS p-value, binned chi-squared p-value (quantile bins of the
nominal sample, sparse bins merged) and Jensen-Shannon distance; per input: the largest change
of a Pearson correlation and the relative Frobenius norm of the change. Padded particle
entries are excluded.

The p-value tests form one family: with ``correction = "holm"`` (the default) the p-values of
every movable feature of every input, KS and chi-squared together, are Holm-Bonferroni
adjusted, and a test fails when its adjusted p-value is below its threshold. So
``ks_min_pvalue`` and ``chi2_min_pvalue`` bound the false-alarm rate of the whole check (the
probability that an unchanged sample fails it), not of each test: with both at 0.01 the check
false-alarms at most 1% of the time (at most the larger threshold when they differ). With
``correction = "none"`` each p-value is held at its threshold on its own, and with 10 features
(20 tests) at 0.01 the check fails one unchanged sample in six (benchmarks/README.md). Holm and
Bonferroni agree on whether the check fails; Holm's step-down names more of the failing
features. The distances (JSD, correlation change) are not p-values and are held at their
thresholds as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.invariance_stats import (
    FeatureFigures as FeatureFigures,  # re-exported
)
from robustcheck.invariance_stats import (
    InvarianceFigures as InvarianceFigures,  # re-exported
)
from robustcheck.invariance_stats import measure as measure  # re-exported
from robustcheck.invariance_stats import real_entries as real_entries  # re-exported
from robustcheck.result import CheckResult
from robustcheck.stats import holm_adjust
from robustcheck.stream import KEEP_SEED

CORRECTIONS = ("holm", "none")

# The p-value tests: kind -> (threshold option, name in messages, FeatureFigures attribute).
PVALUE_KINDS = {
    "ks": ("ks_min_pvalue", "KS", "ks_pvalue"),
    "chi2": ("chi2_min_pvalue", "chi2", "chi2_pvalue"),
}


@dataclass
class PValueTests:
    """The p-value tests held against thresholds: per kind, the raw and the corrected p-values
    (leading axes, features) and the threshold. Leading axes are independent repetitions (the
    calibration study); the check has none."""

    correction: str
    thresholds: dict[str, float]
    raw: dict[str, np.ndarray]
    adjusted: dict[str, np.ndarray]

    @property
    def n_tests(self) -> int:
        return sum(p.shape[-1] for p in self.raw.values())

    def rejected(self, kind: str) -> np.ndarray:
        """Which tests of a kind fail: corrected p-value below the threshold."""
        return self.adjusted[kind] < self.thresholds[kind]

    def alarm(self) -> np.ndarray:
        """Whether any test fails, per repetition (a 0-d array for one check)."""
        shape = next(iter(self.raw.values())).shape[:-1] if self.raw else ()
        out = np.zeros(shape, dtype=bool)
        for kind in self.raw:
            out |= self.rejected(kind).any(axis=-1)
        return out


def pvalue_tests(
    pvalues: Mapping[str, np.ndarray], thresholds: Mapping[str, float | None], correction: str
) -> PValueTests:
    """Hold each kind's p-values (..., features) at its threshold after ``correction``.

    Kinds without a threshold take no part. ``holm``: Holm-Bonferroni over every test of every
    kind together (one family; its leading axes are separate families), so the probability
    that any test fails when no distribution changed is at most the largest threshold.
    ``none``: every p-value on its own, as it is.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    limits = {k: float(t) for k, t in thresholds.items() if t is not None and k in pvalues}
    raw = {k: np.asarray(pvalues[k], dtype=np.float64) for k in limits}
    if correction == "none" or not raw:
        return PValueTests(correction, limits, raw, dict(raw))
    kinds = list(raw)
    joint = holm_adjust(np.concatenate([raw[k] for k in kinds], axis=-1))
    cuts = np.cumsum([raw[k].shape[-1] for k in kinds])[:-1]
    parts = np.split(joint, cuts, axis=-1)
    return PValueTests(correction, limits, raw, dict(zip(kinds, parts, strict=True)))


class Invariance(Check):
    def evaluate(self) -> CheckResult:
        adv = self.run.adversaries(self.options["attack"])
        movable = {name: env.movable.numpy() for name, env in self.run.envelope.inputs.items()}
        figures = measure(adv, movable, int(self.options["bins"]))
        tests = self._tests(figures)
        failures = self._failures(figures, tests)
        o = self.options
        record: dict[str, float | int | str] = {
            "n_entries": figures.n_entries,
            "correlation_change": figures.correlation_change,
            "correlation_frobenius": figures.correlation_frobenius,
            **adv.attack_figures(),
            "epsilon": adv.epsilon,
        }
        if figures.features:
            record.update(self._pvalue_figures(figures, tests))
            record.update(max_jsd=figures.max_jsd.jsd, max_jsd_feature=figures.max_jsd.feature)
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
            *self._correction_note(tests),
            *self._table(figures, tests),
            *self.scan_details(adv.attack),
        ]
        return self.result(
            not failures,
            summary + adv.description,
            figures=record,
            details=details,
            attack=adv.description,
        )

    def _tests(self, figures: InvarianceFigures) -> PValueTests | None:
        """The p-value tests with a threshold, corrected as the check's ``correction`` says."""
        if not figures.features:
            return None
        raw = {
            kind: np.array([getattr(f, attr) for f in figures.features], dtype=np.float64)
            for kind, (_, _, attr) in PVALUE_KINDS.items()
        }
        thresholds = {kind: self.options[option] for kind, (option, _, _) in PVALUE_KINDS.items()}
        tests = pvalue_tests(raw, thresholds, str(self.options["correction"]))
        return tests if tests.n_tests else None

    @staticmethod
    def _pvalue_figures(
        figures: InvarianceFigures, tests: PValueTests | None
    ) -> dict[str, float | int | str]:
        """Per kind: ``min_KIND_pvalue`` is the figure held against the threshold (corrected
        when the kind is tested), ``min_KIND_pvalue_raw`` the same test's raw p-value."""
        out: dict[str, float | int | str] = {}
        if tests is not None:
            out.update(correction=tests.correction, n_pvalue_tests=tests.n_tests)
        for kind, (_, _, attr) in PVALUE_KINDS.items():
            if tests is not None and kind in tests.raw:
                i = int(np.argsort(tests.raw[kind], kind="stable")[0])  # NaN last
                out[f"min_{kind}_pvalue"] = float(tests.adjusted[kind][i])
                out[f"min_{kind}_pvalue_raw"] = float(tests.raw[kind][i])
                out[f"min_{kind}_feature"] = figures.features[i].feature
                out[f"n_{kind}_failing"] = int(tests.rejected(kind).sum())
            else:
                worst = min(figures.features, key=lambda f, a=attr: getattr(f, a))
                out[f"min_{kind}_pvalue"] = getattr(worst, attr)
                out[f"min_{kind}_pvalue_raw"] = getattr(worst, attr)
                out[f"min_{kind}_feature"] = worst.feature
        return out

    def _failures(self, figures: InvarianceFigures, tests: PValueTests | None) -> list[str]:
        o = self.options
        out = []
        per_feature = ("ks_min_pvalue", "chi2_min_pvalue", "max_jsd")
        if not figures.features and any(o[key] is not None for key in per_feature):
            out.append(
                "no movable feature to test (every feature is frozen, integer or a "
                "placeholder), so the per-feature thresholds cannot be checked"
            )
        if tests is not None:
            out += self._pvalue_failures(figures, tests)
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
    def _pvalue_failures(
        figures: InvarianceFigures, tests: PValueTests, named: int = 3
    ) -> list[str]:
        out = []
        for kind, (_, label, _) in PVALUE_KINDS.items():
            if kind not in tests.raw:
                continue
            raw, adjusted, limit = tests.raw[kind], tests.adjusted[kind], tests.thresholds[kind]
            failing = np.flatnonzero(tests.rejected(kind))
            if not len(failing):
                continue
            failing = failing[np.argsort(raw[failing], kind="stable")]
            i = int(failing[0])
            if tests.correction == "none":  # the uncorrected message, worst feature only
                feature = figures.features[i].feature
                out.append(f"{label} p-value {raw[i]:.3g} < min {limit:g} for {feature}")
                continue
            names = ", ".join(figures.features[int(j)].feature for j in failing[:named])
            if len(failing) > named:
                names += f" and {len(failing) - named} more"
            out.append(
                f"{label} p-value {adjusted[i]:.3g} Holm-corrected over {tests.n_tests} tests "
                f"(raw {raw[i]:.3g}) < min {limit:g} for {names}"
            )
        return out

    @staticmethod
    def _correction_note(tests: PValueTests | None) -> list[str]:
        if tests is None:
            return []
        counts = ", ".join(f"{tests.raw[k].shape[-1]} {PVALUE_KINDS[k][1]}" for k in tests.raw)
        if tests.correction == "none":
            return [
                f'p-values not corrected (correction = "none"): each of the {tests.n_tests} '
                f"tests ({counts}) is held at its threshold on its own, so an unchanged sample "
                f"fails the check up to {tests.n_tests} times as often as the threshold"
            ]
        return [
            f"p-values Holm-corrected over {tests.n_tests} tests ({counts}): an unchanged "
            f"sample fails the check with probability at most "
            f"{max(tests.thresholds.values()):g}"
        ]

    @staticmethod
    def _table(figures: InvarianceFigures, tests: PValueTests | None, rows: int = 5) -> list[str]:
        order = sorted(range(len(figures.features)), key=lambda i: figures.features[i].ks_pvalue)
        worst = order[:rows]
        if not worst:
            return []
        corrected = {} if tests is None or tests.correction == "none" else tests.adjusted
        width = max(len(figures.features[i].feature) for i in worst)
        head = f"{'feature':<{width}}  KS D      KS p      "
        head += "KS p Holm " if "ks" in corrected else ""
        head += "chi2 p    " + ("chi2 Holm " if "chi2" in corrected else "") + "JSD"
        lines = [head]
        for i in worst:
            f = figures.features[i]
            line = f"{f.feature:<{width}}  {f.ks_statistic:<8.3g}  {f.ks_pvalue:<8.3g}  "
            if "ks" in corrected:
                line += f"{corrected['ks'][i]:<8.3g}  "
            line += f"{f.chi2_pvalue:<8.3g}  "
            if "chi2" in corrected:
                line += f"{corrected['chi2'][i]:<8.3g}  "
            lines.append(line + f"{f.jsd:.3g}")
        return lines
