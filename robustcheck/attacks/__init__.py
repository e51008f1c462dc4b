"""Attacks: one module each; declared here so specs validate without importing torch."""

from __future__ import annotations

from robustcheck.registry import Declaration
from robustcheck.schema import Field

_COMMON = {
    "method": Field("str", doc="the attack method"),
    "epsilon": Field("number", doc="radius in units of each feature's sigma", minimum=0.0),
    "seed": Field("int", 0, doc="random seed (overridden by --robustcheck-seed)"),
    "batch_size": Field("int", 4096, doc="events per batch on the device", minimum=1),
    "scan": Field(
        "number_list", None, doc="also run at these epsilons and report a table (e.g. [0.5, 1, 2])"
    ),
}

_PGD = {
    **_COMMON,
    "steps": Field("int", 20, doc="number of gradient steps", minimum=1),
    "step_size": Field(
        "number",
        None,
        doc="step in sigma units (default 2.5 * epsilon / steps)",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    "random_start": Field("bool", True, doc="start from a uniform point in the box"),
}

ATTACKS: dict[str, Declaration] = {
    "fgsm": Declaration(
        "fgsm",
        "robustcheck.attacks.fgsm:FGSM",
        _COMMON,
        doc="one signed-gradient step of epsilon sigma (Goodfellow et al.)",
    ),
    "pgd": Declaration(
        "pgd",
        "robustcheck.attacks.pgd:PGD",
        _PGD,
        doc="projected gradient descent in the L-infinity sigma box (Madry et al.)",
    ),
    "constrained_pgd": Declaration(
        "constrained_pgd",
        "robustcheck.attacks.constrained:ConstrainedPGD",
        {
            **_PGD,
            "random_start": Field("bool", False, doc="start from a uniform point in the box"),
            "lambda_chi2": Field(
                "number",
                0.0,
                doc="weight of each event's squared pull (sigma units)",
                minimum=0.0,
            ),
            "lambda_dist": Field(
                "number",
                1.0,
                doc="weight of the change of marginals and correlations",
                minimum=0.0,
            ),
        },
        doc="PGD that keeps the input distributions unchanged (hidden systematics)",
    ),
}
