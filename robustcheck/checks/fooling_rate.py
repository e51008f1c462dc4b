"""Check ``fooling_rate``: the share of correctly classified events an attack flips."""

from __future__ import annotations

from robustcheck.checks.base import Check
from robustcheck.result import CheckResult
from robustcheck.stats import clopper_pearson


class FoolingRate(Check):
    """Fails when the upper end of the Clopper-Pearson interval exceeds ``max``."""

    def evaluate(self) -> CheckResult:
        limit = float(self.options["max"])
        confidence = float(self.options["confidence"])
        decision = self.run.decision(self.options["working_point"])
        outcome = self.run.adversaries(self.options["attack"], decision)
        n = int(outcome.correct.sum())
        k = int(outcome.fooled.sum())
        attack = outcome.description
        cl = f"{100 * confidence:g}% CL"
        if n == 0:
            return self.result(
                False,
                f"no event of {outcome.n_events:,} is classified "
                f"correctly at nominal, so no fooling rate can be measured "
                f"| attack {attack}",
                attack=attack,
                figures={"n_events": 0, "threshold": limit},
            )
        rate = k / n
        low, high = clopper_pearson(k, n, confidence)
        passed = high <= limit
        verdict = "<=" if passed else ">"
        summary = (
            f"fooling rate {rate:.3g} ({cl} {low:.3g}-{high:.3g}) over {n:,} events "
            f"{verdict} max {limit:g} | attack {attack}"
        )
        details = []
        if decision.threshold is not None:
            efficiency = self.options["working_point"]["signal_efficiency"]
            details.append(
                f"decision: {decision.describe()} (signal efficiency "
                f"{efficiency:g} on the nominal sample)"
            )
        shifts = outcome.mean_shift_of_fooled()
        if shifts:
            worst = ", ".join(f"{name} {value:.2f} sigma" for name, value in shifts[:3])
            details.append(f"largest mean |shift| of the {k:,} fooled events: {worst}")
        details += self.scan_details(self.options["attack"])
        figures: dict[str, float | int | str] = {
            "fooling_rate": rate,
            "ci_low": low,
            "ci_high": high,
            "n_events": n,
            "n_fooled": k,
            "threshold": limit,
            "confidence": confidence,
            "epsilon": outcome.epsilon,
            "seed": outcome.seed,
        }
        if decision.threshold is not None:
            figures["decision_threshold"] = decision.threshold
        return self.result(passed, summary, figures=figures, details=details, attack=attack)
