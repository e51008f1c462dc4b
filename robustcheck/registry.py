"""The registry of attacks, checks, tagger loaders and data readers: every plugin's
declarations (robustcheck.declaration), built-ins first, merged with the options each kind
shares, so that neither a built-in nor a plugin declares ``method``, ``seed``, ``name``...
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pluggy

from robustcheck import hookspecs
from robustcheck.declaration import Declaration, Limit, OptionLimit, RegressionFigure
from robustcheck.errors import RobustcheckError
from robustcheck.schema import Field, unknown_key_error, validate

__all__ = [
    "ATTACK_OPTIONS",
    "CHECK_OPTIONS",
    "REGRESSION_OPTIONS",
    "Declaration",
    "Limit",
    "OptionLimit",
    "PluginError",
    "RegressionFigure",
    "attack_options",
]


class PluginError(RobustcheckError):
    """A plugin cannot be loaded, or two plugins register the same name."""

    kind = "plugin error"


# Options of every [attacks.NAME] table: the registry adds them to each attack's own
ATTACK_OPTIONS: dict[str, Field] = {
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

# Options of every white-box attack that the gradient-free spsa may stand in for
GRADIENT_OPTIONS: dict[str, Field] = {
    "on_gradient_failure": Field(
        "str",
        "error",
        doc="when the model gives no input gradients (an ONNX model the bridge cannot "
        "convert): error, or spsa to run the gradient-free spsa attack with the same budget "
        "(the verdict then says gradient-free fallback)",
        choices=("error", "spsa"),
    ),
}

# Options of every [[checks]] table
CHECK_OPTIONS: dict[str, Field] = {
    "name": Field("str", None, doc="the check's name in reports and pytest item ids"),
    "type": Field("str", doc="the check type"),
}

# Options of every check that declares a regression figure
REGRESSION_OPTIONS: dict[str, Field] = {
    "no_regression": Field(
        "bool", False, doc="fail when worse than the baseline beyond statistical noise"
    ),
    "regression_tolerance": Field(
        "number",
        None,
        doc="allowed worsening before the test (in the figure's units)",
        minimum=0.0,
    ),
    "regression_confidence": Field(
        "number",
        0.95,
        doc="one-sided confidence of the regression test",
        minimum=0.5,
        maximum=1.0,
        exclusive_minimum=True,
    ),
}


def with_shared_options(kind: str, declaration: Declaration) -> Declaration:
    """The declaration with the options its kind shares added (its own override them)."""
    if kind == "attacks":
        shared: dict[str, Field] = dict(ATTACK_OPTIONS)
        if declaration.spsa_stand_in:
            shared.update(GRADIENT_OPTIONS)
    elif kind == "checks":
        shared = dict(CHECK_OPTIONS)
        if declaration.regression is not None:
            shared.update(REGRESSION_OPTIONS)
    else:
        return declaration
    return replace(declaration, options={**shared, **declaration.options})


KINDS = ("attacks", "checks", "tagger_loaders", "data_readers")


class _PluginManager(pluggy.PluginManager):
    """Takes ``robustcheck_*`` functions as hooks even without ``@hookimpl``, as pytest does
    for ``pytest_*`` in conftest files."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if (
            opts is None
            and name.startswith("robustcheck_")
            and callable(getattr(plugin, name, None))
        ):
            return {}
        return opts


@functools.cache
def manager() -> pluggy.PluginManager:
    """The plugin manager: built-ins first, then the ``robustcheck`` entry points."""
    from robustcheck import builtin

    plugins = _PluginManager("robustcheck")
    plugins.add_hookspecs(hookspecs)
    plugins.register(builtin, name="robustcheck")
    try:
        plugins.load_setuptools_entrypoints("robustcheck")
    except Exception as exc:  # a broken third-party plugin is the user's to fix, clearly
        raise PluginError(
            f"a robustcheck plugin failed to load: {exc}", fix="fix or uninstall the plugin package"
        ) from None
    return plugins


def register(plugin: object, name: str | None = None) -> None:
    """Add a plugin (module or object with hook implementations) to this process."""
    if manager().get_plugin(name or "") is None and not manager().is_registered(plugin):
        manager().register(plugin, name=name)
    table.cache_clear()


def unregister(plugin: object) -> None:
    if manager().is_registered(plugin):
        manager().unregister(plugin)
    table.cache_clear()


@functools.cache
def table(kind: str) -> dict[str, Declaration]:
    """Every registered declaration of one kind, by name; a clash is an error naming both."""
    hook = getattr(manager().hook, f"robustcheck_{kind}")
    out: dict[str, Declaration] = {}
    for impl in hook.get_hookimpls():  # registration order: built-ins first
        for declaration in impl.function() or ():
            declaration = with_shared_options(kind, replace(declaration, origin=impl.plugin_name))
            if declaration.name in out:
                first = out[declaration.name].origin
                raise PluginError(
                    f"{kind[:-1].replace('_', ' ')} {declaration.name!r} is registered by both "
                    f"{first!r} and {impl.plugin_name!r}",
                    fix="rename one of them or uninstall one plugin",
                )
            out[declaration.name] = declaration
    return out


def attacks() -> dict[str, Declaration]:
    return table("attacks")


def checks() -> dict[str, Declaration]:
    return table("checks")


def tagger_loaders() -> dict[str, Declaration]:
    return table("tagger_loaders")


def data_readers() -> dict[str, Declaration]:
    return table("data_readers")


def attack_options(
    method: str, table: Mapping[str, Any], where: str, source: str | Path
) -> dict[str, Any]:
    """An attack table validated against ``method``'s options, without ``method`` itself:
    the one place that turns a table into an AttackSpec's options."""
    declared = attacks().get(method)
    if declared is None:
        raise unknown_key_error(str(method), list(attacks()), f"{where}.method", source)
    options = validate({**table, "method": method}, declared.options, where, source)
    options.pop("method")
    return options


def check_declaration(check_type: str) -> Declaration | None:
    """The declaration of a check type, or None for a type no plugin registers (now)."""
    return checks().get(check_type)


def adjust_spec(document: dict[str, Any], path: Any) -> None:
    """Let plugins change a parsed spec before validation."""
    manager().hook.robustcheck_adjust_spec(document=document, path=path)
