"""Reports of a robustcheck run: terminal summary, report.json, report.html and its plots.

Nothing here is imported when pytest loads the plugin; matplotlib is imported only when a
report is written. Every door (pytest plugin, CLI) builds one record per check
(:mod:`robustcheck.report.records`); under pytest-xdist the workers send these records to the
controller, which writes the whole report from them.
"""

from __future__ import annotations

REPORT_FORMAT = 1
