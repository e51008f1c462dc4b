"""Hook specifications: how a plugin adds attacks, checks, tagger loaders and data readers.

A plugin is a module (or object) with functions marked ``@robustcheck.hookspecs.hookimpl``,
found through the ``robustcheck`` entry-point group or, inside a pytest run, in conftest.py
files. Each ``robustcheck_*`` hook returns ``Declaration`` objects (robustcheck.declaration,
also importable from robustcheck.registry): a name, the options it accepts (validated like
built-in ones; the shared ones such as ``method``, ``seed`` or ``name`` are added), the
``module:attribute`` that implements it and what robustcheck needs to know about it.
robustcheck registers its own built-ins through the same hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from robustcheck.declaration import Declaration

hookspec = pluggy.HookspecMarker("robustcheck")
hookimpl = pluggy.HookimplMarker("robustcheck")


@hookspec
def robustcheck_attacks() -> list[Declaration]:
    """Attack methods: ``method = NAME`` in ``[attacks.*]``; target an Attack subclass."""
    raise NotImplementedError


@hookspec
def robustcheck_checks() -> list[Declaration]:
    """Check types: ``type = NAME`` in ``[[checks]]``; target a Check subclass."""
    raise NotImplementedError


@hookspec
def robustcheck_tagger_loaders() -> list[Declaration]:
    """Model loaders by file suffix (name ``".onnx"``); target ``load(path, **kwargs)``."""
    raise NotImplementedError


@hookspec
def robustcheck_data_readers() -> list[Declaration]:
    """Data readers by file suffix; target ``read(path, keys, tree, max_events=None, start=0)``
    (a reader without ``start`` works, but cannot stream a file in chunks)."""
    raise NotImplementedError


@hookspec
def robustcheck_adjust_spec(document: dict[str, Any], path: Path) -> None:
    """Change a parsed spec document in place before it is validated."""
    raise NotImplementedError
