"""A drawn plot of a report, shared by the writer that draws it and the HTML page that shows it.

It lives apart from both so that neither imports the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plot:
    """One drawn (or failed) plot of a spec."""

    # histogram | discriminant | pulls | scan | roc | radius | loss_surface |
    # loss_surface_grid | invariance_histogram
    kind: str
    title: str
    file: str  # relative to the report folder
    attack: str | None = None
    png: bytes | None = field(default=None, repr=False)
    error: str | None = None
    check: str | None = None  # the check whose plot it is (loss surface, invariance)
    data: str | None = None  # where in the spec's report.json entry its numbers are
