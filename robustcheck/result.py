"""Check results: verdict, main figure, threshold and details, ready for any report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """The outcome of one check; ``figures`` are the numbers reports and junitxml record."""

    spec: str
    name: str
    type: str
    passed: bool
    summary: str
    figures: dict[str, float | int | str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    attack: str | None = None

    def message(self) -> str:
        """The failure (or success) text shown to the user."""
        return "\n".join([self.summary, *self.details])

    def properties(self) -> list[tuple[str, Any]]:
        """(name, value) pairs for junitxml ``user_properties``."""
        return [("check", self.name), ("passed", self.passed), *self.figures.items()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
