"""Check ``fooling_rate``: the share of correctly classified events an attack flips."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from robustcheck import registry
from robustcheck.checks.base import Check
from robustcheck.result import CheckResult
from robustcheck.stats import clopper_pearson

if TYPE_CHECKING:
    from robustcheck.core import Adversaries
    from robustcheck.decision import Decision


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
        details = list(outcome.warnings)
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
        details += self.scan_details(self.options["attack"], decision)
        figures: dict[str, float | int | str] = {
            "fooling_rate": rate,
            "ci_low": low,
            "ci_high": high,
            "n_events": n,
            "n_fooled": k,
            "threshold": limit,
            "confidence": confidence,
            "epsilon": outcome.epsilon,
            **outcome.attack_figures(),
        }
        if decision.threshold is not None:
            figures["decision_threshold"] = decision.threshold
        if self.options["gradient_masking_check"]:
            details += self._gradient_masking(decision, outcome, figures)
        return self.result(passed, summary, figures=figures, details=details, attack=attack)

    def _gradient_masking(
        self, decision: Decision, outcome: Adversaries, figures: dict[str, float | int | str]
    ) -> list[str]:
        """AutoAttack's sanity check: random points in the same box must not fool more events."""
        name = self.options["attack"]
        method = self.run.spec.attacks[name].method
        if not registry.attacks()[method].box:
            box = [n for n, declared in registry.attacks().items() if declared.box]
            return [
                f"gradient-masking check skipped: {method} does not search the whole box as "
                f"random search does (only {', '.join(box)} are compared)"
            ]
        probe = self.run.adversaries(name, decision, method="random")
        k_attack, k_random = int(outcome.fooled.sum()), int(probe.fooled.sum())
        figures["n_fooled_random"] = k_random
        if k_random <= k_attack:
            return [
                f"gradient-masking check passed: random search fooled {k_random:,} events, "
                f"the attack {k_attack:,} | {probe.description}"
            ]
        message = (
            f"WARNING: possible gradient masking: random search with the same epsilon fooled "
            f"{k_random:,} events, more than the {k_attack:,} of the attack {name!r}, so its "
            f"fooling rate is likely underestimated | {probe.description}"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        return [message]
