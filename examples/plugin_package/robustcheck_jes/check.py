"""Check: the mean absolute change of the signal probability under an attack."""

from __future__ import annotations

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.result import CheckResult


class MaxScoreShift(Check):
    def evaluate(self) -> CheckResult:
        adv = self.run.adversaries(self.options["attack"], full=True)
        nominal = self.run.discriminant(self.run.log_probs("nominal"))
        attacked = self.run.discriminant(adv.log_probs)
        shift = float(np.mean(np.abs(attacked - nominal)))
        limit = float(self.options["max_mean_shift"])
        passed = shift <= limit
        summary = (
            f"mean |signal probability change| {shift:.4g} "
            f"{'<=' if passed else '>'} max {limit:g} | attack {adv.description}"
        )
        return self.result(passed, summary, figures={"mean_score_shift": shift, "threshold": limit})
