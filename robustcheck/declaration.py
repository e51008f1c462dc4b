"""What robustcheck knows about one attack method or check type, in one object.

A ``Declaration`` names the options its spec table takes (validated without importing torch),
the ``module:attribute`` that implements it (imported only when a spec uses it) and what the
rest of robustcheck asks of the type: the figure a regression test compares, the limits the
reports read back from its figures, whether the report plots its attack, whether an attack
searches the whole epsilon box, may be stood in for by the gradient-free ``spsa``, or may make
adversarial training batches. Nothing else in robustcheck keeps a list of types: a plugin's
attack or check is one file, its declaration beside its implementation. robustcheck's own keep
their declarations in ``attacks/__init__.py`` and ``checks/__init__.py``, whose modules import
no torch, so that a spec validates before torch is loaded.

The options every attack or check shares (``method``, ``epsilon``, ``seed``, ``batch_size``,
``scan``; ``name``, ``type`` and, for a check with a regression figure, ``no_regression``,
``regression_tolerance``, ``regression_confidence``) are added by the registry: a declaration
names only its own (and may override a shared one's default or doc).

No robustcheck module but ``schema`` (and ``errors`` through it) is imported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from robustcheck.schema import Field

Figures = Mapping[str, Any]


@dataclass(frozen=True)
class RegressionFigure:
    """How a check's main figure is compared with a baseline: which figure, which way is
    better, and its uncertainty: the figure holding its standard error, or None for a rate
    of two binomial counts (``n_fooled`` of ``n_events``), tested exactly."""

    figure: str
    lower_is_better: bool = True
    error: str | None = None
    # the figure from the others when the check does not record it (e.g. |bias| from bias)
    derive: Callable[[Figures], float] | None = field(default=None, compare=False)

    def value(self, figures: Figures) -> float:
        """The compared figure; KeyError when the figures lack it."""
        if self.derive is not None:
            return float(self.derive(figures))
        return float(figures[self.figure])


@dataclass(frozen=True)
class Limit:
    """A threshold a check records in its figures, and the measured figure it bounds.

    ``key`` names the threshold in the figures; ``measure`` is the figure's key, or a function
    of the figures for a derived one (e.g. ``lambda f: abs(f["bias"])``); ``op`` is ``<=``
    (the figure must stay at or below the threshold) or ``>=``.
    """

    key: str
    label: str
    measure: str | Callable[[Figures], float]
    op: str = "<="

    def value(self, figures: Figures) -> float:
        if isinstance(self.measure, str):
            return float(figures[self.measure])
        return float(self.measure(figures))


@dataclass(frozen=True)
class OptionLimit:
    """How a ``threshold_OPTION`` figure (a check with several optional thresholds records
    each so) pairs with its measured figure, and the figure naming where it was worst."""

    label: str
    figure: str
    where: str | None = None
    op: str = "<="


@dataclass(frozen=True)
class Declaration:
    """A named extension: its options, where its implementation lives, and what robustcheck
    needs to know about it (see the module's doc)."""

    name: str
    target: str | Any  # "module:attribute", or the implementation itself
    options: Mapping[str, Field] = field(default_factory=dict, compare=False)
    doc: str = ""
    # checks
    needs_alternative: bool = False
    requires_one_of: tuple[str, ...] = ()
    regression: RegressionFigure | None = None
    limits: tuple[Limit, ...] = ()
    option_limits: Mapping[str, OptionLimit] = field(default_factory=dict, compare=False)
    headline: Callable[[Figures], tuple[str, str] | None] | None = field(
        default=None, compare=False
    )
    plots_attack: bool = False  # the report draws histograms of the check's attack
    # a check's own rule across its validated options: (option, problem, fix) or None
    validate: Callable[[Mapping[str, Any]], tuple[str, str, str] | None] | None = field(
        default=None, compare=False
    )
    # attacks
    box: bool = False  # searches the whole epsilon box, as random search does
    spsa_stand_in: bool = False  # spsa may stand in when the model gives no gradients
    training: bool = False  # robustcheck.training may make adversarial batches with it
    # cross-checks of an attack table against the spec's other attack tables, raising a
    # SpecError: (name, attack spec, valid attack specs by name, all table names, spec path,
    # every registered attack's declaration by method)
    check_spec: Callable[..., None] | None = field(default=None, compare=False)
    origin: str = "robustcheck"

    def load(self) -> Any:
        """The implementation (an Attack or Check subclass, a loader, a reader)."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def default(self, option: str) -> Any:
        """The declared default of one option."""
        return self.options[option].default
