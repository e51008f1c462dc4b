"""robustcheck: declarative robustness gates for ML taggers in particle physics.

The public API is imported lazily so that ``import robustcheck`` (and pytest loading the
plugin) costs nothing: torch is imported only when a spec is run.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_spec": "robustcheck.spec",
    "Spec": "robustcheck.spec",
    "SpecRun": "robustcheck.core",
    "run_spec": "robustcheck.core",
    "Envelope": "robustcheck.envelope",
    "load_tagger": "robustcheck.taggers",
    "Decision": "robustcheck.decision",
    "CheckResult": "robustcheck.result",
    "RobustcheckError": "robustcheck.errors",
    "SpecError": "robustcheck.errors",
    "DataError": "robustcheck.errors",
    "ModelError": "robustcheck.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'robustcheck' has no attribute {name!r}")
