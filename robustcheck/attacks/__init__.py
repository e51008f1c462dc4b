"""Attacks: one module each; declared here so specs validate without importing torch.

Each declaration holds the attack's own options with their defaults and docs (the registry
adds ``method``, ``epsilon``, ``seed``, ``batch_size`` and ``scan``) and what robustcheck
needs to know about it: ``box`` (searches the whole epsilon box, so the gradient-masking
check compares it with random search), ``spsa_stand_in`` (the gradient-free spsa may replace
it when the model gives no gradients) and ``training`` (robustcheck.training may use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustcheck.declaration import Declaration
from robustcheck.errors import SpecError
from robustcheck.schema import Field, did_you_mean

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
            "lambda_class": Field(
                "number",
                1.0,
                doc="weight of the change of marginals and correlations within each true class",
                minimum=0.0,
            ),
            "lambda_observables": Field(
                "number",
                1.0,
                doc="weight of the change of the [observables]' means, widths and correlations "
                "(whole batch and each true class)",
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
    "apgd": Declaration(
        "apgd",
        "robustcheck.attacks.apgd:APGD",
        {
            "steps": STEPS,
            "loss": Field(
                "str",
                "margin",
                doc="margin: distance to the decision boundary in log-odds (difference of "
                "logits; never saturates); ce: the decision's cross entropy",
                choices=("margin", "ce"),
            ),
            "restarts": Field(
                "int",
                1,
                doc="runs of the search; each after the first starts from a random point of "
                "the box and attacks only the events still not fooled",
                minimum=1,
            ),
            "random_start": Field(
                "bool", False, doc="start the first run from a uniform point in the box"
            ),
        },
        doc="auto-PGD: adaptive step size (from 2 epsilon), momentum and checkpoints in the "
        "L-infinity sigma box (Croce & Hein)",
        box=True,
        spsa_stand_in=True,
        training=True,
    ),
    "ensemble": Declaration(
        "ensemble",
        "robustcheck.attacks.ensemble:Ensemble",
        {
            "attacks": Field(
                "str_list",
                ["apgd_ce", "apgd_margin", "spsa"],
                doc="members, in order, each run only on the events the earlier ones did not "
                "fool: names of [attacks.NAME] tables with the same epsilon, or the built-in "
                "apgd_ce, apgd_margin, spsa, random (default settings); a table of the same "
                "name wins; every member runs with the ensemble's epsilon and seed",
            ),
        },
        doc="per-event worst case of several attacks in the same epsilon box (AutoAttack)",
        box=True,
        spsa_stand_in=True,
        check_spec=lambda *args: check_ensemble(*args),
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
    "min_epsilon": Declaration(
        "min_epsilon",
        "robustcheck.attacks.min_epsilon:MinEpsilon",
        {
            "max_epsilon": Field(
                "number",
                doc="largest radius searched (sigma); events not fooled up to it get radius inf",
                minimum=0.0,
                exclusive_minimum=True,
            ),
            "epsilon": Field(
                "number",
                None,
                doc="not used: min_epsilon searches every epsilon up to max_epsilon",
                minimum=0.0,
            ),
            "steps": Field(
                "int",
                STEPS.default,
                doc="PGD steps of each probe (2.5 epsilon / steps each, as pgd's default)",
                minimum=1,
            ),
            "bisections": Field(
                "int",
                10,
                doc="bisection rounds after the probe at max_epsilon: the radius is resolved "
                "to max_epsilon / 2**bisections",
                minimum=0,
            ),
            "probe": Field(
                "str",
                "pgd",
                doc="the attack of each probe, at the event's own epsilon: pgd (2.5 epsilon / "
                "steps per step) or apgd (adaptive steps, margin loss)",
                choices=("pgd", "apgd"),
            ),
            "random_start": Field(
                "bool",
                None,
                doc="start each probe from a uniform point (default: the probe's own, pgd "
                "true, apgd false)",
            ),
        },
        doc="each correctly classified event's robustness radius: the smallest epsilon at "
        "which PGD fools it, by bisection (the whole fooling rate vs epsilon curve in one run)",
        check_spec=lambda *args: check_min_epsilon(*args),
    ),
}


# Members an ensemble may name without an [attacks.NAME] table: method and options; they run
# with their defaults otherwise, at the ensemble's epsilon and seed.
ENSEMBLE_SHORTHANDS: dict[str, tuple[str, dict[str, Any]]] = {
    "apgd_ce": ("apgd", {"loss": "ce"}),
    "apgd_margin": ("apgd", {"loss": "margin"}),
    "spsa": ("spsa", {}),
    "random": ("random", {}),
}


def ensemble_member_methods(declarations: Mapping[str, Declaration]) -> list[str]:
    """Methods an ensemble member may have: attacks in the plain epsilon box."""
    box = [name for name, declared in declarations.items() if declared.box]
    return [name for name in [*box, "random"] if name != "ensemble"]


def check_ensemble(
    name: str,
    attack: Any,
    attacks: Mapping[str, Any],
    declared: set[str],
    path: Path,
    declarations: Mapping[str, Declaration],
) -> None:
    """An ensemble names existing members of the same threat model, each once.

    ``attacks`` are the spec's valid attack tables, ``declared`` all its table names (an
    invalid table's own error is reported already), ``declarations`` every registered method.
    """
    where = f"attacks.{name}.attacks"
    members = list(attack.options.get("attacks") or [])
    shorthands = ", ".join(ENSEMBLE_SHORTHANDS)
    if not members:
        raise SpecError(
            "an ensemble needs at least one member",
            file=path,
            field=where,
            fix=f'attacks = ["apgd_ce", "apgd_margin", "spsa"] (built-ins: {shorthands})',
        )
    seen: set[str] = set()
    for member in members:
        if member in seen:
            raise SpecError(
                f"member {member!r} is listed twice", file=path, field=where, fix="list it once"
            )
        seen.add(member)
        if member == name:
            raise SpecError(
                "an ensemble cannot contain itself",
                file=path,
                field=where,
                fix=f"name other attacks or the built-ins {shorthands}",
            )
        if member not in declared:
            if member in ENSEMBLE_SHORTHANDS:
                continue
            hint = did_you_mean(member, [*declared, *ENSEMBLE_SHORTHANDS])
            raise SpecError(
                f"member {member!r} is neither an [attacks.*] table nor a built-in member",
                file=path,
                field=where,
                fix=(hint + " " if hint else "")
                + f"name an [attacks.NAME] table of this spec or one of {shorthands}",
            )
        table = attacks.get(member)
        if table is None:  # declared but invalid: its own error says why
            continue
        allowed = ensemble_member_methods(declarations)
        if table.method not in allowed:
            raise SpecError(
                f"member {member!r} has method {table.method!r}; an ensemble combines attacks "
                "in the same epsilon box",
                file=path,
                field=where,
                fix=f"use members whose method is one of {', '.join(allowed)}",
            )
        if float(table.options["epsilon"]) != float(attack.options["epsilon"]):
            raise SpecError(
                f"member {member!r} has epsilon {table.options['epsilon']:g}, the ensemble "
                f"{attack.options['epsilon']:g}: members run at the ensemble's epsilon",
                file=path,
                field=where,
                fix=f"set epsilon = {attack.options['epsilon']:g} in [attacks.{member}]",
            )


def check_min_epsilon(
    name: str,
    attack: Any,
    attacks: Mapping[str, Any],
    declared: set[str],
    path: Path,
    declarations: Mapping[str, Declaration],
) -> None:
    """min_epsilon measures every epsilon up to max_epsilon in one run: no epsilon, no scan."""
    for key in ("epsilon", "scan"):
        if attack.options.get(key) is not None:
            raise SpecError(
                f"min_epsilon measures every epsilon up to max_epsilon in one run, so `{key}` "
                "does not apply",
                file=path,
                field=f"attacks.{name}.{key}",
                fix="remove it: set max_epsilon, and read the curve with a fooling_rate check's "
                "epsilon (or the report's curve)",
            )
