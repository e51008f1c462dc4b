"""Epsilon scans: fooling rate and invariance figures as a function of epsilon."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from robustcheck.invariance_stats import measure
from robustcheck.stats import clopper_pearson

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.decision import Decision


def scan_rows(
    run: SpecRun, attack: str, decision: Decision | None = None
) -> list[dict[str, float]]:
    """One row per epsilon of the attack's ``scan``: fooling rate, interval, invariance."""
    movable = {name: env.movable.numpy() for name, env in run.envelope.inputs.items()}
    rows = []
    for epsilon in run.spec.attacks[attack].options.get("scan") or ():
        adv = run.adversaries(attack, decision, epsilon=float(epsilon))
        n, k = int(adv.correct.sum()), int(adv.fooled.sum())
        low, high = clopper_pearson(k, n) if n else (np.nan, np.nan)
        figures = measure(adv, movable)
        rows.append(
            {
                "epsilon": float(epsilon),
                "fooling_rate": k / n if n else np.nan,
                "ci_low": low,
                "ci_high": high,
                "min_ks_pvalue": figures.min_ks.ks_pvalue if figures.features else np.nan,
                "correlation_change": figures.correlation_change,
            }
        )
    return rows


def scan_table(rows: list[dict[str, float]]) -> list[str]:
    """The scan as text lines for a check's details."""
    if not rows:
        return []
    lines = ["epsilon  fooling rate (95% CL)        raw min KS p  corr change"]
    for r in rows:
        rate = f"{r['fooling_rate']:.3g} ({r['ci_low']:.3g}-{r['ci_high']:.3g})"
        lines.append(
            f"{r['epsilon']:<7g}  {rate:<27}  {r['min_ks_pvalue']:<12.3g}  "
            f"{r['correlation_change']:.3g}"
        )
    return lines
