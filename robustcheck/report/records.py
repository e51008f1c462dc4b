"""Check records: one JSON-ready dict per check, the unit every report is made of.

A record is small and holds only JSON types, so pytest-xdist workers can send it to the
controller as a string. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustcheck.result import CheckResult
    from robustcheck.spec import CheckSpec

VERDICTS = ("passed", "failed", "error")


def check_record(
    spec_path: str,
    check: CheckSpec,
    seconds: float,
    result: CheckResult | None = None,
    error: str | None = None,
    nominal: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one check: its result, or the error that kept it from running.

    ``nominal`` is the spec's nominal performance (sanity gates), taken from ``result`` when
    it carries one.
    """
    record: dict[str, Any] = {
        "spec": spec_path,
        "index": check.index,
        "name": check.name,
        "type": check.type,
        "attack_name": check.options.get("attack"),
        "options": {k: v for k, v in check.options.items() if v is not None},
        "seconds": seconds,
        "verdict": "error",
        "error": error,
        "figure": "",
        "threshold": "",
        "comparisons": [],
        "summary": error or "",
        "details": [],
        "figures": {},
        "attack": None,
        "nominal": nominal,
    }
    if result is not None:
        figure, threshold = result.headline()
        record.update(
            verdict="passed" if result.passed else "failed",
            error=None,
            figure=figure,
            threshold=threshold,
            comparisons=[c.to_dict() for c in result.comparisons()],
            summary=result.summary,
            details=list(result.details),
            figures=dict(result.figures),
            attack=result.attack,
            nominal=result.nominal or nominal,
        )
    return clean(record)


def clean(value: Any) -> Any:
    """A copy holding only JSON types: tuples become lists, numpy scalars plain numbers,
    NaN and infinities None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy or torch scalar
        return clean(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=False, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    return json.loads(text)


def sort_key(record: dict[str, Any]) -> tuple[str, int]:
    return (record["spec"], int(record["index"]))


def counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many checks passed, failed and could not run."""
    out = dict.fromkeys(VERDICTS, 0)
    for record in records:
        out[record["verdict"]] += 1
    return out
