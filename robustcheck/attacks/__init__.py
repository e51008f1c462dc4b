"""Attacks: one module each; declared here so specs validate without importing torch."""

from __future__ import annotations

from robustcheck.registry import Declaration
from robustcheck.schema import Field

_COMMON = {
    "method": Field("str", doc="the attack method"),
    "epsilon": Field("number", doc="radius in units of each feature's sigma", minimum=0.0),
    "seed": Field("int", 0, doc="random seed (overridden by --robustcheck-seed)"),
    "batch_size": Field(
        "int",
        None,
        doc="events per batch on the device (default: 4096 on CPU, 65536 on "
        "CUDA, halved on out-of-memory)",
        minimum=1,
    ),
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
    "random": Declaration(
        "random",
        "robustcheck.attacks.random_search:RandomSearch",
        {
            **_COMMON,
            "samples": Field("int", 100, doc="random points drawn per event", minimum=1),
            "corners": Field(
                "bool", False, doc="draw corners of the box (each entry at +-epsilon sigma)"
            ),
        },
        doc="random search in the epsilon-sigma box; forward passes only",
    ),
    "spsa": Declaration(
        "spsa",
        "robustcheck.attacks.spsa:SPSA",
        {
            **_PGD,
            "samples": Field(
                "int", 16, doc="random direction pairs per step (2 forward passes each)", minimum=1
            ),
            "delta": Field(
                "number",
                None,
                doc="finite-difference probe in sigma units (default epsilon / 4)",
                minimum=0.0,
                exclusive_minimum=True,
            ),
        },
        doc="signed steps along an SPSA gradient estimate (Uesato et al.); forward passes only",
    ),
    "shift": Declaration(
        "shift",
        "robustcheck.attacks.shift:Shift",
        {
            **_COMMON,
            "mode": Field(
                "str",
                "worst",
                doc="worst: the worst-case shift in [-epsilon, epsilon] per event; up/down: the "
                "fixed +epsilon / -epsilon sigma variation",
                choices=("worst", "up", "down"),
            ),
            "groups": Field(
                "str_list", None, doc="names of the coherent groups to shift (default: all)"
            ),
            "steps": Field("int", 20, doc="gradient steps of the worst-case search", minimum=1),
            "step_size": Field(
                "number",
                None,
                doc="step of the shift in sigma units (default 2.5 * epsilon / steps)",
                minimum=0.0,
                exclusive_minimum=True,
            ),
            "random_start": Field(
                "bool", False, doc="start the worst-case search from a uniform random shift"
            ),
        },
        doc="coherent systematic shift of [envelope.*] groups (e.g. a jet energy scale): "
        "worst case, or the fixed +-epsilon sigma variation",
    ),
}
