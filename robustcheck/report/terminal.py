"""The summary printed at the end of a run: one row per check.

A table (spec, check, figure, threshold, verdict, attack) when it fits the terminal; on a
narrow terminal each check takes two lines: ``VERDICT spec::check`` and, indented below, its
figure, threshold and attack.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from robustcheck.report.records import counts, sort_key
from robustcheck.schema import is_number

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


def spec_lines(records: Iterable[dict[str, Any]], root: Path | None = None) -> list[str]:
    """One line per spec with the nominal performance of its tagger (records without a
    ``nominal`` entry: none), then one per warning about it."""
    out = []
    seen: set[str] = set()
    for record in sorted(records, key=sort_key):
        nominal = record.get("nominal")
        if not nominal or record["spec"] in seen:
            continue
        seen.add(record["spec"])
        where = f"robustcheck: {display_path(record['spec'], root)}:"
        out.append(f"{where} {nominal_line(nominal)}")
        out += [f"{where} warning: {warning}" for warning in nominal.get("warnings") or ()]
    return out


def render(
    records: Sequence[dict[str, Any]],
    width: int = 120,
    root: Path | None = None,
    partial: Mapping[str, Any] | None = None,
) -> str:
    """The summary as plain text: the table, the totals, the nominal performance of each
    spec and, for a partial run, how many checks ran."""
    text = [*(line.text() for line in lines(records, width, root)), totals_line(records)]
    text += spec_lines(records, root)
    if partial:
        text.append(f"robustcheck: {partial_line(partial)}")
    return "\n".join(text)


def partial_line(info: Mapping[str, Any]) -> str:
    """'3 of 6 checks ran (interrupted: KeyboardInterrupt)'."""
    return f"{info['ran']} of {info['collected']} checks ran ({info['reason']})"


def nominal_line(nominal: Mapping[str, Any]) -> str:
    """'nominal AUC 0.871 ± 0.004, accuracy 0.803 (balanced 0.801, majority class 0.500),
    2,000 events' and the gates skipped, from a record's ``nominal`` entry."""

    def number(key: str) -> float | None:
        value = nominal.get(key)
        return value if is_number(value) else None

    parts = []
    auc, error = number("auc"), number("auc_error")
    if auc is not None:
        parts.append(f"AUC {auc:.3f}" + (f" ± {error:.3f}" if error is not None else ""))
    if (accuracy := number("accuracy")) is not None:
        extra = [
            f"{label} {value:.3f}"
            for key, label in (
                ("balanced_accuracy", "balanced"),
                ("majority_rate", "majority class"),
            )
            if (value := number(key)) is not None
        ]
        parts.append(f"accuracy {accuracy:.3f}" + (f" ({', '.join(extra)})" if extra else ""))
    if (events := number("n_events")) is not None:
        parts.append(f"{int(events):,} events")
    if nominal.get("skipped_gates"):
        parts.append("skipped gates: " + ", ".join(map(str, nominal["skipped_gates"])))
    return "nominal " + (", ".join(parts) or "performance not measured")
