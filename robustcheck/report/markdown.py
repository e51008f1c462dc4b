"""summary.md: the verdict table in Markdown, for a CI job summary or a merge-request note."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustcheck.report.records import sort_key
from robustcheck.report.terminal import nominal_line, partial_line, totals_line

ICONS = {"passed": "✅", "failed": "❌", "error": "⚠️"}


def cell(text: str) -> str:
    """One table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def relative(path: str, folder: Path) -> str:
    """``path`` relative to the report folder (the summary travels with it)."""
    if not os.path.isabs(path):
        return path
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive on Windows
        return Path(path).name


def render(
    records: Sequence[dict[str, Any]],
    folder: Path,
    partial: Mapping[str, Any] | None = None,
) -> str:
    """The summary: a headline with the totals, one row per check, the nominal performance
    of each spec and a pointer to report.html. Paths are relative to the report folder."""
    ordered = sorted(records, key=sort_key)
    failed = any(r["verdict"] != "passed" for r in ordered)
    out = [f"## robustcheck: {'❌' if failed else '✅'} {totals_line(ordered)}", ""]
    if partial:
        out += [f"> **Partial run:** {partial_line(partial)}", ""]
    out += [
        "| verdict | spec | check | figure | threshold | attack |",
        "|---|---|---|---|---|---|",
    ]
    for r in ordered:
        figure = r["figure"]
        if r["verdict"] == "error" and r.get("error"):
            figure = r["error"].splitlines()[0]
        verdict = f"{ICONS.get(r['verdict'], '')} {r['verdict'].upper()}".strip()
        row = [
            verdict,
            f"`{relative(r['spec'], folder)}`",
            r["name"],
            figure,
            r["threshold"],
            r.get("attack_name") or "",
        ]
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    seen: set[str] = set()
    notes = []
    for r in ordered:
        if r.get("nominal") and r["spec"] not in seen:
            seen.add(r["spec"])
            notes.append(f"- `{relative(r['spec'], folder)}`: {nominal_line(r['nominal'])}")
    if notes:
        out += ["", *notes]
    out += ["", "Figures, plots and seeds: `report.html` and `report.json` in this folder."]
    return "\n".join(out) + "\n"


def write(
    records: Sequence[dict[str, Any]], folder: Path, partial: Mapping[str, Any] | None = None
) -> Path:
    from robustcheck.atomic import write_text

    return write_text(folder / "summary.md", render(records, folder, partial))
