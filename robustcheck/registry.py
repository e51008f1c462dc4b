"""Declarations of attacks, checks, tagger loaders and data readers.

A declaration names its options (validated without importing torch) and the
``module:attribute`` that implements it, imported only when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robustcheck.schema import Field


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
