"""report.json: every check's figures, thresholds, seeds and verdicts, with what they rest on
(versions, file hashes, timings) and the data behind every plot.

The report holds one run. ``partial`` at its top (None for a whole run) says how many of the
collected checks ran, whether the run was interrupted, why, and which checks did not run;
``problems`` then opens with the same line. Each spec carries the tagger's ``nominal``
performance when its records have one.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from robustcheck.report import REPORT_FORMAT
from robustcheck.report.records import clean, counts, sort_key
from robustcheck.report.terminal import partial_line

PACKAGES = (
    "pytest-robustcheck",
    "torch",
    "onnxruntime",
    "onnx",
    "numpy",
    "scipy",
    "pytest",
    "matplotlib",
    "mplhep",
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


PER_SPEC = ("spec_info", "attacks", "problems", "nominal")  # record keys kept per spec


def partial(
    expected: Mapping[str, Sequence[str]],
    records: Iterable[dict[str, Any]],
    interrupted: str | None = None,
    reason: str = "",
    not_loaded: Sequence[str] = (),
) -> dict[str, Any] | None:
    """What report.json says at its top when not every collected check ran; None when all
    did and the run was not interrupted.

    ``expected``: spec path -> names of its collected checks; ``interrupted``: why the run
    stopped early (KeyboardInterrupt, -x, ...); ``reason``: why checks were not run otherwise
    (a -k selection); ``not_loaded``: specs whose checks are unknown because they did not load.
    """
    ran = {(r["spec"], r["name"]) for r in records}
    collected = ran | {(spec, name) for spec, names in expected.items() for name in names}
    not_run = [f"{spec}::{name}" for spec, name in sorted(collected - ran)]
    not_run += [f"{path} (not loaded)" for path in not_loaded]
    if not not_run and interrupted is None:
        return None
    why = [f"interrupted: {interrupted}"] if interrupted else []
    if not_loaded:
        count = len(not_loaded)
        why.append(f"{count} spec{'s' if count != 1 else ''} could not be loaded")
    if reason and len(collected) > len(ran):
        why.append(reason)
    return {
        "ran": len(ran),
        "collected": len(collected),
        "interrupted": interrupted is not None,
        "reason": "; ".join(why) or reason,
        "not_run": not_run,
    }


def build(
    records: Iterable[dict[str, Any]],
    command: str,
    problems: Iterable[str] = (),
    partial: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report document from the check records (which may come from several
    pytest-xdist workers, in any order). ``partial``: see :func:`partial`."""
    records = sorted(records, key=sort_key)
    specs: dict[str, dict[str, Any]] = {}
    all_problems = [f"partial run: {partial_line(partial)}"] if partial else []
    all_problems += [p for p in problems if p not in all_problems]
    for record in records:
        spec = specs.setdefault(
            record["spec"],
            {"path": record["spec"], "info": None, "checks": [], "attacks": {}, "nominal": None},
        )
        info = record.get("spec_info")
        # prefer the info of a check that evaluated the model (an erroring one may not have)
        if info and (spec["info"] is None or ("roc" in info and "roc" not in spec["info"])):
            spec["info"] = info
        if record.get("nominal") and spec["nominal"] is None:
            spec["nominal"] = record["nominal"]
        for name, attack in (record.get("attacks") or {}).items():
            spec["attacks"].setdefault(name, attack)
        for problem in record.get("problems") or ():
            if problem not in all_problems:
                all_problems.append(problem)
        spec["checks"].append({k: v for k, v in record.items() if k not in PER_SPEC})
    out_specs = []
    for spec in specs.values():
        info = spec["info"] or {"path": spec["path"]}
        entry = {**info, "checks": spec["checks"], "attacks": spec["attacks"]}
        if spec["nominal"] is not None:
            entry["nominal"] = spec["nominal"]
        out_specs.append(entry)
    from robustcheck.event_random import SCHEME as RANDOM_SCHEME

    return clean(
        {
            "format": REPORT_FORMAT,
            "partial": dict(partial) if partial else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
            "versions": versions(),
            "random_streams": RANDOM_SCHEME,
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
    from robustcheck.atomic import write_json

    return write_json(folder / "report.json", document, indent=1, allow_nan=False)
