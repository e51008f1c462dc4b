"""The summary printed at the end of a run: one row per check.

A table (spec, check, figure, threshold, verdict, attack) when it fits the terminal; on a
narrow terminal each check takes two lines: ``VERDICT spec::check`` and, indented below, its
figure, threshold and attack.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from robustcheck.report.records import counts, sort_key

COLUMNS = ("spec", "check", "figure", "threshold", "verdict", "attack")
GAP = "  "
INDENT = " " * 8


class Line(NamedTuple):
    """One output line: the verdict is kept apart so a terminal can colour it."""

    before: str
    verdict: str
    after: str

    def text(self) -> str:
        return (self.before + self.verdict + self.after).rstrip()


def display_path(path: str, root: Path | None = None) -> str:
    """A spec path relative to ``root`` (or the working folder) when it lies below it."""
    root = root or Path.cwd()
    try:
        return os.path.relpath(path, root) if Path(path).is_relative_to(root) else path
    except ValueError:  # another drive on Windows
        return path


def cells(record: dict[str, Any], root: Path | None = None) -> list[str]:
    """The six cells of one check's row."""
    figure = record["figure"]
    if record["verdict"] == "error" and record.get("error"):
        figure = record["error"].splitlines()[0]
    return [
        display_path(record["spec"], root),
        record["name"],
        figure,
        record["threshold"],
        record["verdict"].upper(),
        record.get("attack_name") or "",
    ]


def lines(
    records: Iterable[dict[str, Any]], width: int = 120, root: Path | None = None
) -> list[Line]:
    """The summary's lines: a table when it fits in ``width`` characters, else two lines per
    check."""
    rows = [cells(r, root) for r in sorted(records, key=sort_key)]
    header = [c.upper() for c in COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(COLUMNS))]
    if sum(widths) + len(GAP) * (len(widths) - 1) <= width:
        out = []
        for row in [header, *rows]:
            padded = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
            out.append(Line(GAP.join(padded[:4]) + GAP, padded[4], GAP + padded[5]))
        return out
    out = []
    for spec, name, figure, threshold, verdict, attack in rows:
        out.append(Line("", verdict, " " * (len(INDENT) - len(verdict)) + f"{spec}::{name}"))
        rest = [figure, threshold, f"attack {attack}" if attack else ""]
        if any(rest):
            out.append(Line(INDENT + GAP.join(x for x in rest if x), "", ""))
    return out


def totals_line(records: Sequence[dict[str, Any]]) -> str:
    """'3 passed, 1 failed, 0 errors in 2 specs'."""
    n = counts(records)
    specs = len({r["spec"] for r in records})
    return (
        f"{n['passed']} passed, {n['failed']} failed, {n['error']} errors "
        f"in {specs} spec{'s' if specs != 1 else ''}"
    )


def render(records: Sequence[dict[str, Any]], width: int = 120, root: Path | None = None) -> str:
    """The summary as plain text."""
    return "\n".join([*(line.text() for line in lines(records, width, root)), totals_line(records)])
