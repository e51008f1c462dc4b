"""Numbers a check computes for the report's plots but not for its verdict.

A check hands them over with :func:`remember` (keyed by its run and check index); the report
reads them back with :func:`recall` when it adds its data to the check's record. Held in a
weak mapping, so they go away with the run. Imports nothing heavy.
"""

from __future__ import annotations

import weakref
from typing import Any

_KEPT: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def remember(run: Any, kind: str, index: int, data: dict[str, Any]) -> None:
    """Keep ``data`` (JSON types) of check ``index`` of ``run`` for the report."""
    _KEPT.setdefault(run, {})[(kind, index)] = data


def recall(run: Any, kind: str, index: int) -> dict[str, Any] | None:
    """What :func:`remember` kept for this check, or None."""
    return _KEPT.get(run, {}).get((kind, index))
