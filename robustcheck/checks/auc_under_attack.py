"""Check ``auc_under_attack``: the AUC when every event is attacked (Stein et al. 2022)."""

from __future__ import annotations

from robustcheck.checks.base import Check
from robustcheck.checks.resilience import effective_counts, sample_auc
from robustcheck.result import CheckResult
from robustcheck.stats import auc, auc_standard_error


class AucUnderAttack(Check):
    """Every event, signal and background, gets the attack's whole budget."""

    def evaluate(self) -> CheckResult:
        o = self.options
        adv = self.run.adversaries(o["attack"], full=True)
        auc_nom, err = sample_auc(self.run, "nominal")
        labels = self.run.is_signal("nominal")
        auc_adv = auc(labels, self.run.discriminant(adv.log_probs), self.run.weights("nominal"))
        err_adv = auc_standard_error(
            auc_adv, *effective_counts(labels, self.run.weights("nominal"))
        )
        drop = auc_nom - auc_adv
        figures: dict[str, float | int | str] = {
            "auc_nominal": auc_nom,
            "auc_nominal_error": err,
            "auc_adversarial": auc_adv,
            "auc_adversarial_error": err_adv,
            "auc_drop": drop,
            "epsilon": adv.epsilon,
            **adv.attack_figures(),
        }
        failures = []
        if o["max_auc_drop"] is not None:
            figures["threshold"] = o["max_auc_drop"]
            if drop > o["max_auc_drop"]:
                failures.append(f"drop {drop:.4g} > max {o['max_auc_drop']:g}")
        if o["min_auc"] is not None:
            figures["min_auc"] = o["min_auc"]
            if auc_adv < o["min_auc"]:
                failures.append(f"AUC under attack {auc_adv:.4f} < min {o['min_auc']:g}")
        verdict = "; ".join(failures) if failures else "within limits"
        summary = (
            f"AUC {auc_nom:.4f} ± {err:.4f} nominal, {auc_adv:.4f} under attack (drop "
            f"{drop:.4g}) {verdict} | attack {adv.description}, every event, full budget"
        )
        return self.result(
            not failures,
            summary,
            figures=figures,
            details=[*adv.warnings, *adv.notes],
            attack=adv.description,
        )
