"""Check ``resilience``: how much the tagger's AUC changes between two generators.

Resilience is ``100 * |AUC_nominal - AUC_alternative| / AUC_nominal`` (Gambhir, LeBlanc and
Zhou, arXiv:2509.19431): taggers with the best AUC are often the least resilient.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.errors import DataError
from robustcheck.result import CheckResult
from robustcheck.stats import auc, auc_standard_error, background_rejection, effective_count

if TYPE_CHECKING:
    from robustcheck.core import SpecRun


def sample_auc(run: SpecRun, sample: str) -> tuple[float, float]:
    """AUC of the signal-class probability on a sample, and its standard error."""
    labels = run.is_signal(sample)
    if labels.all() or not labels.any():
        missing = "background" if labels.all() else "signal"
        raise DataError(
            f"the {sample} sample has no {missing} events, so it has no AUC",
            file=run.spec.data[sample].path,
            field=f"data.{sample}.labels",
            fix=f"signal is class {run.spec.model.signal_class}; the sample needs both",
        )
    scores = run.discriminant(run.log_probs(sample))
    weights = run.weights(sample)
    area = auc(labels, scores, weights)
    return area, auc_standard_error(area, *effective_counts(labels, weights))


def effective_counts(labels: np.ndarray, weights: np.ndarray | None) -> tuple[float, float]:
    """Effective numbers of signal and background events."""
    signal = labels.astype(bool)
    return (
        effective_count(None if weights is None else weights[signal], int(signal.sum())),
        effective_count(None if weights is None else weights[~signal], int((~signal).sum())),
    )


def rejection(run: SpecRun, sample: str, threshold: float) -> float:
    """Background rejection of a sample at a fixed threshold on the discriminant."""
    background = run.is_signal(sample) == 0
    scores = run.discriminant(run.log_probs(sample))[background]
    weights = run.weights(sample)
    return background_rejection(scores, threshold, None if weights is None else weights[background])


class Resilience(Check):
    def evaluate(self) -> CheckResult:
        o = self.options
        auc_nom, err_nom = sample_auc(self.run, "nominal")
        auc_alt, err_alt = sample_auc(self.run, "alternative")
        change = 100.0 * abs(auc_nom - auc_alt) / auc_nom
        change_err = 100.0 * math.hypot(err_nom, err_alt) / auc_nom
        figures: dict[str, float | int | str] = {
            "auc_nominal": auc_nom,
            "auc_nominal_error": err_nom,
            "auc_alternative": auc_alt,
            "auc_alternative_error": err_alt,
            "auc_change_percent": change,
            "auc_change_percent_error": change_err,
        }
        failures = []
        if o["max_auc_change_percent"] is not None:
            figures["threshold"] = o["max_auc_change_percent"]
            if change > o["max_auc_change_percent"]:
                failures.append(f"> max {o['max_auc_change_percent']:g}%")
        if o["min_auc"] is not None:
            figures["min_auc"] = o["min_auc"]
            for name, value in (("nominal", auc_nom), ("alternative", auc_alt)):
                if value < o["min_auc"]:
                    failures.append(f"{name} AUC {value:.4g} < min {o['min_auc']:g}")
        details = []
        if o["working_point"] is not None or o["max_rejection_change_percent"] is not None:
            details += self._working_point(figures, failures)
        summary = (
            f"AUC {auc_nom:.4f} ± {err_nom:.4f} (nominal) vs {auc_alt:.4f} ± {err_alt:.4f} "
            f"(alternative): change {change:.3g}% ± {change_err:.2g}%"
        )
        summary += f" {'; '.join(failures)}" if failures else " within limits"
        return self.result(not failures, summary, figures=figures, details=details)

    def _working_point(self, figures: dict, failures: list[str]) -> list[str]:
        o = self.options
        point = o["working_point"] or {"signal_efficiency": 0.5}
        decision = self.run.decision(point)
        assert decision.threshold is not None
        threshold = decision.threshold
        rej_nom = rejection(self.run, "nominal", threshold)
        rej_alt = rejection(self.run, "alternative", threshold)
        signal = self.run.is_signal("alternative").astype(bool)
        scores = self.run.discriminant(self.run.log_probs("alternative"))[signal]
        weights = self.run.weights("alternative")
        passing = scores >= threshold
        eff_alt = float(np.average(passing, weights=None if weights is None else weights[signal]))
        if math.isfinite(rej_nom):
            change = 100.0 * abs(rej_alt - rej_nom) / rej_nom
        else:  # no nominal background passes: only an alternative that also rejects all is equal
            change = 0.0 if rej_alt == rej_nom else math.inf
        figures.update(
            decision_threshold=threshold,
            rejection_nominal=rej_nom,
            rejection_alternative=rej_alt,
            rejection_change_percent=change,
            signal_efficiency_alternative=eff_alt,
        )
        limit = o["max_rejection_change_percent"]
        if limit is not None and not change <= limit:
            failures.append(f"background rejection changes by {change:.3g}% > max {limit:g}%")
        return [
            f"at signal efficiency {point['signal_efficiency']:g} (threshold {threshold:.4g} "
            f"on the nominal sample): background rejection {rej_nom:.4g} nominal vs "
            f"{rej_alt:.4g} alternative ({change:.3g}%); signal efficiency on the alternative "
            f"sample {eff_alt:.3g}"
        ]
