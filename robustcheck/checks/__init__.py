"""Checks: one module each; declared here so specs validate without importing torch."""

from __future__ import annotations

from robustcheck.registry import Declaration
from robustcheck.schema import Field

_COMMON = {
    "name": Field("str", None, doc="the check's name in reports and pytest item ids"),
    "type": Field("str", doc="the check type"),
}

CHECKS: dict[str, Declaration] = {
    "fooling_rate": Declaration(
        "fooling_rate",
        "robustcheck.checks.fooling_rate:FoolingRate",
        {
            **_COMMON,
            "attack": Field("str", doc="name of an [attacks.NAME] table"),
            "max": Field("number", doc="largest allowed fooling rate", minimum=0.0, maximum=1.0),
            "confidence": Field(
                "number",
                0.95,
                doc="confidence level of the Clopper-Pearson interval",
                minimum=0.0,
                maximum=1.0,
                exclusive_minimum=True,
            ),
        },
        doc="fraction of correctly classified events whose decision the attack flips",
    ),
    "invariance": Declaration(
        "invariance",
        "robustcheck.checks.invariance:Invariance",
        {
            **_COMMON,
            "attack": Field("str", doc="name of an [attacks.NAME] table"),
            "ks_min_pvalue": Field(
                "number",
                None,
                doc="smallest allowed per-feature KS p-value",
                minimum=0.0,
                maximum=1.0,
            ),
            "chi2_min_pvalue": Field(
                "number",
                None,
                doc="smallest allowed per-feature chi-squared p-value",
                minimum=0.0,
                maximum=1.0,
            ),
            "max_jsd": Field(
                "number",
                None,
                doc="largest allowed Jensen-Shannon distance (base 2)",
                minimum=0.0,
                maximum=1.0,
            ),
            "max_correlation_change": Field(
                "number",
                None,
                doc="largest allowed change of a Pearson correlation",
                minimum=0.0,
            ),
            "max_correlation_frobenius": Field(
                "number",
                None,
                doc="largest allowed relative Frobenius norm of the change",
                minimum=0.0,
            ),
            "bins": Field("int", 20, doc="quantile bins for chi-squared and JSD", minimum=2),
        },
        doc="perturbed marginals and correlations are statistically the nominal ones",
        requires_one_of=(
            "ks_min_pvalue",
            "chi2_min_pvalue",
            "max_jsd",
            "max_correlation_change",
            "max_correlation_frobenius",
        ),
    ),
}
