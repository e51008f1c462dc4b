"""Check ``fraction_bias``: a template fit of the signal fraction, biased by the generator.

Templates of the discriminant for signal and background come from the nominal sample; the
alternative sample, whose true signal fraction is known from its labels, is fitted with
them. A tagger whose response depends on the generator biases the measured fraction (the
quark-fraction study of Gambhir, LeBlanc and Zhou).

The fit is iminuit's binned template likelihood with the templates' own statistical
uncertainty (Barlow-Beeston-lite, the "da" method of Dembinski and Abdelmotteleb,
arXiv:2206.12346): a template made of few nominal events no longer passes for exact, which
would understate the fit uncertainty and overstate the pull. Event weights enter as sums of
weights and of squared weights, in the data and in the templates.
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
    valid: bool = True  # whether MIGRAD converged to a valid minimum

    @property
    def bias(self) -> float:
        return self.fraction - self.true_fraction

    @property
    def pull(self) -> float:
        return self.bias / self.error if self.error > 0 else float("inf")


Histogram = tuple[np.ndarray, np.ndarray]  # sums of weights, sums of squared weights per bin


def fit_fraction(
    signal: Histogram, background: Histogram, data: Histogram, method: str = "da"
) -> tuple[float, float, bool]:
    """Signal fraction ``y_s / (y_s + y_b)`` of binned ``data`` from a template fit of the
    yields, its error from the yields' covariance (HESSE), and whether the fit is valid.

    ``method`` is iminuit's treatment of the templates' statistical uncertainty, or "none"
    to take them as exact (the binned Poisson likelihood of the bare templates).
    """
    from iminuit import Minuit
    from iminuit.cost import Template

    def pairs(h: Histogram) -> np.ndarray:
        return np.stack([np.asarray(h[0], float), np.asarray(h[1], float)], axis=-1)

    edges = np.arange(len(data[0]) + 1, dtype=float)  # the bins' order is all the fit needs
    if method == "none":  # exact templates: the binned Poisson likelihood of their shapes
        shapes = [
            np.asarray(h[0], float) / max(float(np.sum(h[0])), 1e-300) for h in (signal, background)
        ]
        counts = np.asarray(data[0], float)

        def cost(signal: float, background: float) -> float:
            mu = np.clip(signal * shapes[0] + background * shapes[1], 1e-300, None)
            return float(2.0 * (mu - counts * np.log(mu)).sum())

        cost.errordef = Minuit.LEAST_SQUARES  # type: ignore[attr-defined]
    else:
        cost = Template(
            pairs(data),
            edges,
            [pairs(signal), pairs(background)],
            name=("signal", "background"),
            method=method,
        )
    total = float(np.sum(data[0]))
    minuit = Minuit(cost, signal=0.5 * total, background=0.5 * total)
    minuit.limits = [(0.0, None), (0.0, None)]
    minuit.strategy = 2
    minuit.tol = 1e-6  # the fraction to far below its error (default EDM goal 2e-4)
    minuit.migrad()
    minuit.hesse()
    y_s, y_b = (float(v) for v in minuit.values)
    y = y_s + y_b
    if y <= 0:
        return 0.5, float("inf"), False
    gradient = np.array([y_b / y**2, -y_s / y**2])
    covariance = np.array(minuit.covariance, dtype=float)
    variance = float(gradient @ covariance @ gradient)
    error = float(np.sqrt(variance)) if variance > 0 else float("inf")
    return y_s / y, error, bool(minuit.valid)


def fraction_fit(
    nominal_scores: np.ndarray,
    nominal_signal: np.ndarray,
    scores: np.ndarray,
    signal: np.ndarray,
    bins: int,
    nominal_weights: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    method: str = "da",
) -> FractionFit:
    """Fit the signal fraction of a sample with templates from the nominal sample."""
    edges = np.unique(np.quantile(nominal_scores, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    sig = nominal_signal.astype(bool)
    w = np.ones(len(nominal_scores)) if nominal_weights is None else nominal_weights
    v = np.ones(len(scores)) if weights is None else weights

    def histogram(x: np.ndarray, weight: np.ndarray) -> Histogram:
        return (
            np.histogram(x, edges, weights=weight)[0],
            np.histogram(x, edges, weights=weight * weight)[0],
        )

    fraction, error, valid = fit_fraction(
        histogram(nominal_scores[sig], w[sig]),
        histogram(nominal_scores[~sig], w[~sig]),
        histogram(scores, v),
        method,
    )
    true = float(np.average(signal.astype(bool), weights=weights))
    return FractionFit(fraction, error, true, valid)


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
            o["template_errors"],
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
        details = [
            "fit: iminuit binned template likelihood, "
            + (
                "templates taken as exact (template_errors = none)"
                if o["template_errors"] == "none"
                else f"with the templates' statistical uncertainty ({o['template_errors']})"
            )
        ]
        if not fit.valid:
            failures.append("the fit did not converge (MIGRAD found no valid minimum)")
        return self.result(not failures, summary, figures=figures, details=details)
