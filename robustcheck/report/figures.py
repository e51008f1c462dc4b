"""A drawn plot of a report, shared by the writer that draws it and the HTML page that shows it.

It lives apart from both so that neither imports the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plot:
    """One drawn (or failed) plot of a spec."""

    kind: str  # histogram | scan | roc | radius
    title: str
    file: str  # relative to the report folder
    attack: str | None = None
    png: bytes | None = field(default=None, repr=False)
    error: str | None = None
