"""Attacks: one module each; declared here so specs validate without importing torch.

Each declaration holds the attack's own options with their defaults and docs (the registry
adds ``method``, ``epsilon``, ``seed``, ``batch_size`` and ``scan``) and what robustcheck
needs to know about it: ``box`` (searches the whole epsilon box, so the gradient-masking
check compares it with random search), ``spsa_stand_in`` (the gradient-free spsa may replace
it when the model gives no gradients) and ``training`` (robustcheck.training may use it).
"""

from __future__ import annotations

from robustcheck.declaration import Declaration
from robustcheck.schema import Field

# the default of ``steps`` for every iterative attack (read by attacks.base.step_settings)
STEPS = Field("int", 20, doc="number of gradient steps", minimum=1)

_PGD = {
    "steps": STEPS,
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
        {},
        doc="one signed-gradient step of epsilon sigma (Goodfellow et al.)",
        box=True,
        spsa_stand_in=True,
        training=True,
    ),
    "pgd": Declaration(
        "pgd",
        "robustcheck.attacks.pgd:PGD",
        _PGD,
        doc="projected gradient descent in the L-infinity sigma box (Madry et al.)",
        box=True,
        spsa_stand_in=True,
        training=True,
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
        # no spsa stand-in: spsa neither keeps the distributions nor resets unfooled events,
        # so standing in for it would test another threat model
        training=True,
    ),
    "random": Declaration(
        "random",
        "robustcheck.attacks.random_search:RandomSearch",
        {
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
        box=True,
    ),
    "shift": Declaration(
        "shift",
        "robustcheck.attacks.shift:Shift",
        {
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
            "steps": Field(
                "int", STEPS.default, doc="gradient steps of the worst-case search", minimum=1
            ),
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
