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
}
