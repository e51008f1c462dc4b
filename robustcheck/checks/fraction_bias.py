"""Check ``fraction_bias``: a template fit of the signal fraction, biased by the generator.

Templates of the discriminant for signal and background come from the nominal sample; the
alternative sample, whose true signal fraction is known from its labels, is fitted with
them by a binned Poisson likelihood. A tagger whose response depends on the generator biases
the measured fraction (the quark-fraction study of Gambhir, LeBlanc and Zhou).
Template statistical uncertainties are not included in the fit uncertainty, and with event
weights the Poisson likelihood treats the weighted counts as counts, so the fit uncertainty
(and the pull) is then approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.result import CheckResult


@dataclass
class FractionFit:
    fraction: float
    error: float
    true_fraction: float

    @property
    def bias(self) -> float:
        return self.fraction - self.true_fraction

    @property
    def pull(self) -> float:
        return self.bias / self.error if self.error > 0 else float("inf")


def fit_fraction(
    signal_template: np.ndarray, background_template: np.ndarray, counts: np.ndarray
) -> tuple[float, float]:
    """Maximum-likelihood signal fraction of binned ``counts`` and its curvature error."""
    from scipy.optimize import minimize_scalar

    s = signal_template / signal_template.sum()
    b = background_template / background_template.sum()
    total = counts.sum()

    def nll(f: float) -> float:
        mu = np.clip(total * (f * s + (1.0 - f) * b), 1e-300, None)
        return float((mu - counts * np.log(mu)).sum())

    best = minimize_scalar(nll, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    f = float(best.x)
    mu = np.clip(total * (f * s + (1.0 - f) * b), 1e-300, None)
    curvature = float((counts * (total * (s - b)) ** 2 / mu**2).sum())
    return f, (1.0 / np.sqrt(curvature) if curvature > 0 else float("inf"))


def fraction_fit(
    nominal_scores: np.ndarray,
    nominal_signal: np.ndarray,
    scores: np.ndarray,
    signal: np.ndarray,
    bins: int,
    nominal_weights: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> FractionFit:
    """Fit the signal fraction of a sample with templates from the nominal sample."""
    edges = np.unique(np.quantile(nominal_scores, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    sig = nominal_signal.astype(bool)
    w = np.ones(len(nominal_scores)) if nominal_weights is None else nominal_weights
    s_hist = np.histogram(nominal_scores[sig], edges, weights=w[sig])[0]
    b_hist = np.histogram(nominal_scores[~sig], edges, weights=w[~sig])[0]
    counts = np.histogram(scores, edges, weights=weights)[0]
    fraction, error = fit_fraction(s_hist, b_hist, counts)
    true = float(np.average(signal.astype(bool), weights=weights))
    return FractionFit(fraction, error, true)


class FractionBias(Check):
    def evaluate(self) -> CheckResult:
        o, run = self.options, self.run
        fit = fraction_fit(
            run.discriminant(run.log_probs("nominal")),
            run.is_signal("nominal"),
            run.discriminant(run.log_probs("alternative")),
            run.is_signal("alternative"),
            int(o["bins"]),
            run.weights("nominal"),
            run.weights("alternative"),
        )
        figures: dict[str, float | int | str] = {
            "fitted_fraction": fit.fraction,
            "fitted_fraction_error": fit.error,
            "true_fraction": fit.true_fraction,
            "bias": fit.bias,
            "pull": fit.pull,
        }
        failures = []
        if o["max_bias"] is not None:
            figures["threshold"] = o["max_bias"]
            if abs(fit.bias) > o["max_bias"]:
                failures.append(f"|bias| {abs(fit.bias):.4g} > max {o['max_bias']:g}")
        if o["max_pull"] is not None:
            figures["max_pull"] = o["max_pull"]
            if abs(fit.pull) > o["max_pull"]:
                failures.append(f"|pull| {abs(fit.pull):.3g} > max {o['max_pull']:g}")
        summary = (
            f"signal fraction of the alternative sample fitted with nominal templates: "
            f"{fit.fraction:.4f} ± {fit.error:.4f}, true {fit.true_fraction:.4f}, bias "
            f"{fit.bias:+.4f} ({fit.pull:+.2f} sigma) "
            + ("; ".join(failures) if failures else "within limits")
        )
        return self.result(not failures, summary, figures=figures)
