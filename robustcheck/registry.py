"""Declarations of attacks, checks, tagger loaders and data readers.

A declaration names its options (validated without importing torch) and the
``module:attribute`` that implements it, imported only when it is used.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from robustcheck.errors import RobustcheckError
from robustcheck.schema import Field


class PluginError(RobustcheckError):
    """A plugin cannot be loaded, or two plugins register the same name."""

    kind = "plugin error"


@dataclass(frozen=True)
class Declaration:
    """A named extension: its option schema and where its implementation lives."""

    name: str
    target: str
    options: Mapping[str, Field] = field(default_factory=dict, compare=False)
    doc: str = ""
    needs_alternative: bool = False
    requires_one_of: tuple[str, ...] = ()
    origin: str = "robustcheck"

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


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
    from robustcheck import builtin, hookspecs

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
            declaration = replace(declaration, origin=impl.plugin_name)
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


def adjust_spec(document: dict[str, Any], path: Any) -> None:
    """Let plugins change a parsed spec before validation."""
    manager().hook.robustcheck_adjust_spec(document=document, path=path)
