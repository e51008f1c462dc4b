"""The check interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustcheck.result import CheckResult
from robustcheck.spec import CheckSpec

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.decision import Decision


class Check:
    """A check reads what it needs from the shared SpecRun and returns one result."""

    def __init__(self, spec: CheckSpec, run: SpecRun) -> None:
        self.spec = spec
        self.run = run
        self.options = spec.options

    def evaluate(self) -> CheckResult:
        raise NotImplementedError

    def scan_details(self, attack: str, decision: Decision | None = None) -> list[str]:
        """The attack's epsilon scan as a table (with the check's decision rule)."""
        from robustcheck.checks.scan import scan_rows, scan_table

        return scan_table(scan_rows(self.run, attack, decision))

    def result(self, passed: bool, summary: str, **kwargs: object) -> CheckResult:
        return CheckResult(
            spec=str(self.run.spec.path),
            name=self.spec.name,
            type=self.spec.type,
            passed=passed,
            summary=summary,
            **kwargs,
        )
