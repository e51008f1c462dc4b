"""Hook implementations: what this package adds to robustcheck.

Declarations are light (no torch import); the implementations in attack.py and check.py are
imported only when a spec uses them. Each declares only its own options: robustcheck adds
the ones every attack (``method``, ``epsilon``, ``seed``, ``batch_size``, ``scan``) or check
(``name``, ``type``) takes; a declared one (``epsilon``, ``batch_size`` here) overrides its
default and doc.
"""

from __future__ import annotations

from robustcheck.declaration import Declaration
from robustcheck.hookspecs import hookimpl
from robustcheck.schema import Field


@hookimpl
def robustcheck_attacks() -> list[Declaration]:
    return [
        Declaration(
            "energy_scale",
            "robustcheck_jes.attack:EnergyScale",
            {
                "epsilon": Field(
                    "number", doc="scale variation in units of `scale_sigma`", minimum=0.0
                ),
                "scale_sigma": Field(
                    "number", 0.01, doc="relative energy-scale uncertainty", minimum=0.0
                ),
                "features": Field("str_list", doc="features scaled together"),
                "batch_size": Field("int", 4096, doc="events per batch", minimum=1),
            },
            doc="one energy scale for the named features of every event: worst of +-epsilon",
        )
    ]


@hookimpl
def robustcheck_checks() -> list[Declaration]:
    return [
        Declaration(
            "max_score_shift",
            "robustcheck_jes.check:MaxScoreShift",
            {
                "attack": Field("str", doc="name of an [attacks.NAME] table"),
                "max_mean_shift": Field(
                    "number", doc="largest allowed mean |score change|", minimum=0.0
                ),
            },
            doc="mean absolute change of the signal probability under an attack",
        )
    ]
