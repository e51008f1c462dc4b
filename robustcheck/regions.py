"""Control regions of the invariance check: cuts on the nominal discriminant, parsed safely.

A region is written ``score OP NUMBER``, several joined by ``and``: ``"score > 0.8"``,
``"score >= 0.2 and score < 0.5"``. ``score`` is the nominal signal-class probability of each
event; OP is one of ``<``, ``<=``, ``>``, ``>=``. Nothing is evaluated as Python: a region is
a list of (operator, number) cuts. Imports no torch (specs validate before torch loads).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}

_CUT = re.compile(r"^\s*score\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")

FORM = 'score OP NUMBER, several joined by "and" (OP one of <, <=, >, >=), e.g. "score > 0.8"'


@dataclass(frozen=True)
class Region:
    """A named region: events whose nominal score passes every cut."""

    name: str
    text: str
    cuts: tuple[tuple[str, float], ...]

    def select(self, score: Any) -> Any:
        """Boolean array: which events (by their nominal score) lie in the region."""
        import numpy as np

        keep = np.ones(np.shape(score), dtype=bool)
        for op, value in self.cuts:
            keep &= OPERATORS[op](score, value)
        return keep


def parse_region(name: str, text: str) -> Region:
    """The region a string describes; ValueError saying what is wrong and the form expected."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"region {name!r} is empty: write {FORM}")
    cuts = []
    for part in re.split(r"\band\b", text):
        match = _CUT.match(part)
        if match is None:
            raise ValueError(f"region {name!r}: cannot read {part.strip()!r}; write {FORM}")
        value = float(match.group(2))
        if not math.isfinite(value):
            raise ValueError(f"region {name!r}: {part.strip()!r} needs a finite number")
        cuts.append((match.group(1), value))
    return Region(name, text.strip(), tuple(cuts))
