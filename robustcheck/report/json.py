"""report.json: every check's figures, thresholds, seeds and verdicts, with what they rest on
(versions, file hashes, timings) and the data behind every plot."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from robustcheck.report import REPORT_FORMAT
from robustcheck.report.records import clean, counts, sort_key

PACKAGES = (
    "pytest-robustcheck",
    "torch",
    "onnxruntime",
    "onnx",
    "onnx2torch",
    "numpy",
    "scipy",
    "pytest",
    "matplotlib",
)


def versions() -> dict[str, str | None]:
    """Installed versions of robustcheck and the packages its figures depend on."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import robustcheck

    out["robustcheck"] = robustcheck.__version__
    return out


def build(
    records: Iterable[dict[str, Any]], command: str, problems: Iterable[str] = ()
) -> dict[str, Any]:
    """The whole report document from the check records (which may come from several
    pytest-xdist workers, in any order)."""
    records = sorted(records, key=sort_key)
    specs: dict[str, dict[str, Any]] = {}
    all_problems = list(problems)
    for record in records:
        spec = specs.setdefault(
            record["spec"], {"path": record["spec"], "info": None, "checks": [], "attacks": {}}
        )
        info = record.get("spec_info")
        # prefer the info of a check that evaluated the model (an erroring one may not have)
        if info and (spec["info"] is None or ("roc" in info and "roc" not in spec["info"])):
            spec["info"] = info
        for name, attack in (record.get("attacks") or {}).items():
            spec["attacks"].setdefault(name, attack)
        for problem in record.get("problems") or ():
            if problem not in all_problems:
                all_problems.append(problem)
        spec["checks"].append(
            {k: v for k, v in record.items() if k not in ("spec_info", "attacks", "problems")}
        )
    out_specs = []
    for spec in specs.values():
        info = spec["info"] or {"path": spec["path"]}
        out_specs.append({**info, "checks": spec["checks"], "attacks": spec["attacks"]})
    return clean(
        {
            "format": REPORT_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
            "versions": versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "summary": counts(records),
            "timings": timings(out_specs),
            "specs": out_specs,
            "problems": all_problems,
        }
    )


def timings(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per check (the first check of a spec also loads its model and data) and
    per attack."""
    checks = {f"{s['path']}::{c['name']}": c["seconds"] for s in specs for c in s["checks"]}
    attacks = {
        f"{s['path']}::{name}": a.get("seconds") for s in specs for name, a in s["attacks"].items()
    }
    return {"total_check_seconds": sum(checks.values()), "checks": checks, "attacks": attacks}


def write(document: dict[str, Any], folder: Path) -> Path:
    path = folder / "report.json"
    path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
