"""Check ``fooling_rate``: the share of correctly classified events an attack flips."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from robustcheck import registry
from robustcheck.checks.base import Check
from robustcheck.checks.masking import probe_lines
from robustcheck.result import CheckResult
from robustcheck.stats import clopper_pearson

# an ensemble's gradient-free members may add at most this share of the events they attack
# (AutoAttack warns when its black-box member lowers the robust accuracy by 0.2 points)
ENSEMBLE_MASKING_SHARE = 0.002

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
        epsilon = self.options.get("epsilon")
        if epsilon is not None:  # read a min_epsilon attack's curve (spec-checked: it is one)
            from robustcheck.attacks.min_epsilon import event_radii, fooled_within

            k = fooled_within(event_radii(outcome), float(epsilon)) if n else 0
            attack = f"{attack}, curve read at eps={float(epsilon):g} sigma"
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
        details = list(outcome.warnings) + list(outcome.notes)
        if decision.threshold is not None:
            efficiency = self.options["working_point"]["signal_efficiency"]
            details.append(
                f"decision: {decision.describe()} (signal efficiency "
                f"{efficiency:g} on the nominal sample)"
            )
        shifts = outcome.mean_shift_of_fooled()
        if shifts:
            worst = ", ".join(f"{name} {value:.2f} sigma" for name, value in shifts[:3])
            fooled = int(outcome.fooled.sum())
            details.append(f"largest mean |shift| of the {fooled:,} fooled events: {worst}")
        details += self.scan_details(self.options["attack"], decision)
        figures: dict[str, float | int | str] = {
            "fooling_rate": rate,
            "ci_low": low,
            "ci_high": high,
            "n_events": n,
            "n_fooled": k,
            "threshold": limit,
            "confidence": confidence,
            "epsilon": outcome.epsilon if epsilon is None else float(epsilon),
            **outcome.attack_figures(),
        }
        if decision.threshold is not None:
            figures["decision_threshold"] = decision.threshold
        masking = self.options["gradient_masking_check"]
        if masking is None:  # on by default for an ensemble, as AutoAttack runs its checks
            masking = self.run.spec.attacks[self.options["attack"]].method == "ensemble"
        if masking:
            details += self._gradient_masking(decision, outcome, figures)
        return self.result(passed, summary, figures=figures, details=details, attack=attack)

    def _gradient_masking(
        self, decision: Decision, outcome: Adversaries, figures: dict[str, float | int | str]
    ) -> list[str]:
        """AutoAttack's sanity checks: gradient-free attacks in the same box must not fool more
        events (for an ensemble: its gradient-free members must add few after the gradient
        ones), input gradients must not vanish, and the scores must not be randomised."""
        name = self.options["attack"]
        method = self.run.spec.attacks[name].method
        attack = self.run.make_attack(name, outcome.epsilon)
        gradients = attack.needs_gradients and not outcome.fallback
        lines = probe_lines(self.run, attack, decision, outcome.correct, gradients)
        probes = self.options.get("gradient_masking_attacks")
        ensemble = outcome.report_figures
        if probes is None and "n_fooled_gradient_free" in ensemble:
            lines.append(self._ensemble_masking(ensemble))
        elif not registry.attacks()[method].box:
            box = [n for n, declared in registry.attacks().items() if declared.box]
            lines.append(
                f"gradient-masking check skipped: {method} does not search the whole box as "
                f"random search does (only {', '.join(box)} are compared)"
            )
        else:
            for probe_method in probes or ["random"]:
                lines.append(self._compare(name, probe_method, decision, outcome, figures))
        for line in lines:
            if line.startswith("WARNING"):
                warnings.warn(line, UserWarning, stacklevel=3)
        return lines

    def _compare(
        self,
        name: str,
        probe_method: str,
        decision: Decision,
        outcome: Adversaries,
        figures: dict[str, float | int | str],
    ) -> str:
        """A gradient-free attack with the same budget must not fool more events."""
        probe = self.run.adversaries(name, decision, method=probe_method)
        k_attack, k_probe = int(outcome.fooled.sum()), int(probe.fooled.sum())
        figures[f"n_fooled_{probe_method}"] = k_probe
        label = {"random": "random search", "spsa": "spsa"}[probe_method]
        if k_probe <= k_attack:
            return (
                f"gradient-masking check passed: {label} fooled {k_probe:,} events, "
                f"the attack {k_attack:,} | {probe.description}"
            )
        return (
            f"WARNING: possible gradient masking: {label} with the same epsilon fooled "
            f"{k_probe:,} events, more than the {k_attack:,} of the attack {name!r}, so its "
            f"fooling rate is likely underestimated | {probe.description}"
        )

    @staticmethod
    def _ensemble_masking(ensemble: dict[str, float | int | str]) -> str:
        """AutoAttack's check on its black-box member: the gradient-free members, run after
        the gradient ones, should fool (almost) nothing those missed."""
        extra, found = int(ensemble["n_fooled_gradient_free"]), int(ensemble["n_fooled_gradient"])
        attacked, members = int(ensemble["n_attacked"]), ensemble["gradient_free_members"]
        if extra <= ENSEMBLE_MASKING_SHARE * attacked:
            return (
                f"gradient-masking check passed: the gradient-free members ({members}) fooled "
                f"{extra:,} events the gradient members missed (they fooled {found:,} of "
                f"{attacked:,})"
            )
        return (
            f"WARNING: possible gradient masking: the gradient-free members ({members}) fooled "
            f"{extra:,} events the gradient members missed (more than "
            f"{100 * ENSEMBLE_MASKING_SHARE:g}% of the {attacked:,} attacked; the gradient "
            f"members fooled {found:,}), so gradient attacks alone underestimate the fooling "
            "rate; the ensemble's figure includes these events"
        )
