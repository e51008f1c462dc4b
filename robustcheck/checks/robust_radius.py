"""Check ``robust_radius``: a low quantile of the events' robustness radii, from min_epsilon.

The ``quantile`` q of the radii of the correctly classified events must exceed ``min`` sigma.
Its interval is the distribution-free order-statistic interval: with the radii sorted,
r_(1) <= ... <= r_(n), the interval [r_(l), r_(u)] covers the true quantile with probability at
least ``confidence``, where l and u are binomial(n, q) quantiles. The check passes when the
lower end r_(l) is above ``min``. That is the fooling-rate rule read at ``min``: with k the
events fooled within ``min`` sigma (radius <= min, as a fooling_rate check with ``epsilon =
min`` counts them), r_(l) > min exactly when k <= l - 1, i.e. when the Clopper-Pearson upper
limit of k/n is at most q. So "5% quantile above 0.5 sigma" and "fooling rate within 0.5
sigma <= 5% at 95% CL" pass and fail together.

Radii are censored at the attack's ``max_epsilon`` (events it does not fool get ``inf``), so
an order statistic beyond it is reported as "> max_epsilon"; ``min`` may not exceed it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from robustcheck.attacks.min_epsilon import event_radii
from robustcheck.checks.base import Check
from robustcheck.result import CheckResult
from robustcheck.stats import clopper_pearson


def order_statistic_ranks(n: int, quantile: float, confidence: float) -> tuple[int, int]:
    """1-based ranks (l, u) of the order-statistic interval of the ``quantile`` of n values.

    ``P(r_(l) <= x_q) >= 1 - alpha/2`` and ``P(r_(u) >= x_q) >= 1 - alpha/2`` for any
    continuous distribution (alpha = 1 - confidence): l - 1 is the largest k with
    ``P(Binomial(n, q) <= k) <= alpha/2`` (l = 0: no lower end, -inf) and u - 1 the smallest k
    with ``P(Binomial(n, q) <= k) >= 1 - alpha/2`` (u = n + 1: no upper end, +inf).
    """
    from scipy.stats import binom

    alpha = 1.0 - confidence
    cdf = binom.cdf(np.arange(n + 1), n, quantile)
    below = np.flatnonzero(cdf <= alpha / 2)
    lower = int(below[-1]) + 1 if len(below) else 0
    above = np.flatnonzero(cdf >= 1 - alpha / 2)
    upper = int(above[0]) + 1 if len(above) else n + 1
    return lower, upper


def quantile_interval(
    values: Sequence[float] | np.ndarray, quantile: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(estimate, low, high) of a quantile: r_(ceil(n q)) and the order-statistic interval.

    ``low`` is -inf and ``high`` +inf where the sample is too small for that end.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("quantile_interval needs at least one value")
    lower, upper = order_statistic_ranks(n, quantile, confidence)
    estimate = float(x[max(math.ceil(n * quantile), 1) - 1])
    low = float(x[lower - 1]) if lower >= 1 else -math.inf
    high = float(x[upper - 1]) if upper <= n else math.inf
    return estimate, low, high


def radius_text(value: float, max_epsilon: float) -> str:
    return f"> {max_epsilon:g}" if value > max_epsilon else f"{value:.3g}"


class RobustRadius(Check):
    """Fails when the lower end of the quantile's interval is not above ``min`` sigma."""

    def evaluate(self) -> CheckResult:
        limit = float(self.options["min"])
        quantile = float(self.options["quantile"])
        confidence = float(self.options["confidence"])
        decision = self.run.decision(self.options["working_point"])
        outcome = self.run.adversaries(self.options["attack"], decision)
        attack, max_epsilon = outcome.description, outcome.epsilon
        radii = event_radii(outcome)
        n = len(radii)
        if n == 0:
            return self.result(
                False,
                f"no event of {outcome.n_events:,} is classified correctly at nominal, so no "
                f"radius can be measured | attack {attack}",
                attack=attack,
                figures={"n_events": 0, "threshold": limit},
            )
        estimate, low, high = quantile_interval(radii, quantile, confidence)
        low = max(low, 0.0)  # radii are not negative
        k = int(np.count_nonzero(radii <= limit))
        rate_low, rate_high = clopper_pearson(k, n, confidence)
        passed = low > limit
        cl = f"{100 * confidence:g}% CL"
        share = f"{100 * quantile:g}%"
        summary = (
            f"radius {share} quantile {radius_text(estimate, max_epsilon)} sigma ({cl} "
            f"{radius_text(low, max_epsilon)}-{radius_text(high, max_epsilon)}) over {n:,} "
            f"events {'>' if passed else '<='} min {limit:g} | attack {attack}"
        )
        censored = int(np.count_nonzero(~np.isfinite(radii)))
        finite = radii[np.isfinite(radii)]
        details = [
            *outcome.warnings,
            f"fooled within {limit:g} sigma: {k:,} of {n:,} = {k / n:.3g} ({cl} "
            f"{rate_low:.3g}-{rate_high:.3g}); the check passes when the upper limit is at "
            f"most {quantile:g} (the same rule as the lower end of the quantile's interval)",
            f"{censored:,} events not fooled up to max_epsilon {max_epsilon:g} sigma (radius "
            "> max_epsilon, censored)",
        ]
        if len(finite):
            median = float(np.median(finite))
            details.append(
                f"radii of the {len(finite):,} fooled events: smallest {finite.min():.3g}, "
                f"median {median:.3g}, largest {finite.max():.3g} sigma"
            )
        if decision.threshold is not None:
            efficiency = self.options["working_point"]["signal_efficiency"]
            details.append(
                f"decision: {decision.describe()} (signal efficiency {efficiency:g} on the "
                "nominal sample)"
            )
        # an order statistic beyond max_epsilon is censored: the JSON gets None for it, while
        # the lower end keeps max_epsilon, still a true lower limit
        figures: dict[str, float | int | str | None] = {
            "radius_quantile": estimate if estimate <= max_epsilon else None,
            "quantile_low": min(low, max_epsilon),
            "quantile_high": high if high <= max_epsilon else None,
            "quantile": quantile,
            "threshold": limit,
            "confidence": confidence,
            "max_epsilon": max_epsilon,
            "n_events": n,
            "n_fooled": k,
            "fraction_within_min": k / n,
            "ci_low": rate_low,
            "ci_high": rate_high,
            "n_censored": censored,
            **outcome.attack_figures(),
        }
        if decision.threshold is not None:
            figures["decision_threshold"] = decision.threshold
        return self.result(passed, summary, figures=figures, details=details, attack=attack)
