"""Baselines: the released model's figures, and regression tests of a new model against them.

A baseline file records, per spec and check, the figures with their uncertainties, the seeds,
and fingerprints of the model, the data, the envelope and the attack. A check that asks for
``no_regression`` fails when its figure is worse than the baseline's by more than the
combined statistical uncertainty (a one-sided test at ``regression_confidence``), after an
optional ``regression_tolerance``. A baseline made on other data, another envelope or another
attack is refused with a message, never compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustcheck.digest import file_digest, json_digest
from robustcheck.errors import SpecError
from robustcheck.result import CheckResult

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.spec import CheckSpec, DataSpec

FORMAT = 1


@dataclass(frozen=True)
class RegressionFigure:
    """How a check type's main figure is compared: which figure, which way is better."""

    figure: str
    lower_is_better: bool
    error: str | None  # figure holding its standard error; None: binomial from counts


REGRESSION_FIGURES: dict[str, RegressionFigure] = {
    "fooling_rate": RegressionFigure("fooling_rate", True, None),
    "resilience": RegressionFigure("auc_change_percent", True, "auc_change_percent_error"),
    "auc_under_attack": RegressionFigure("auc_adversarial", False, "auc_adversarial_error"),
    "fraction_bias": RegressionFigure("abs_bias", True, "fitted_fraction_error"),
}


def model_digest(run: SpecRun) -> str:
    """The model file's hash (for an import path: its weights, else its module source)."""
    spec = run.spec
    path = spec.model_path()
    if path is not None:
        return file_digest(path)
    if spec.model.weights:
        return file_digest(spec.base_dir / spec.model.weights)
    module = run.tagger.module  # type: ignore[attr-defined]
    import inspect

    source = inspect.getsourcefile(type(module))
    return file_digest(Path(source)) if source else json_digest(spec.model.path)


def _selection(data: DataSpec) -> dict[str, object]:
    """What a [data.NAME] table selects, but its path; the streaming settings only when the
    sample is streamed (they change random starts and the kept sample)."""
    out = {k: v for k, v in asdict(data).items() if k != "path"}
    if data.chunk_size is None:
        del out["chunk_size"], out["keep_events"]
    return out


def fingerprints(run: SpecRun, check: CheckSpec) -> dict[str, str]:
    """What must match for two runs of a check to be comparable."""
    spec = run.spec
    out = {f"data.{name}": file_digest(data.path) for name, data in sorted(spec.data.items())}
    out["data selection"] = json_digest(
        {name: _selection(data) for name, data in spec.data.items()}
    )
    out["envelope"] = json_digest(
        {
            "features": {
                name: {f: asdict(e) for f, e in table.items()}
                for name, table in spec.envelope.items()
            },
            "groups": {name: [asdict(g) for g in groups] for name, groups in spec.groups.items()},
        }
    )
    model = spec.model
    out["model settings"] = json_digest(
        {"output": model.output, "scores": model.scores, "signal_class": model.signal_class}
    )
    attack = check.options.get("attack")
    if attack is not None:
        options = dict(spec.attacks[attack].options)
        options.pop("seed", None)
        options.pop("batch_size", None)
        out["attack"] = json_digest({"method": spec.attacks[attack].method, **options})
    settings = {k: v for k, v in check.options.items() if not k.startswith("regression")}
    settings.pop("no_regression", None)
    out["check"] = json_digest({"type": check.type, **settings})
    return out


def spec_key(run: SpecRun, baseline_file: Path) -> str:
    """The spec's path relative to the baseline file's folder, so baselines travel."""
    try:
        return Path(run.spec.path).resolve().relative_to(baseline_file.resolve().parent).as_posix()
    except ValueError:
        return Path(run.spec.path).name


def record(run: SpecRun, check: CheckSpec, result: CheckResult) -> dict[str, Any]:
    """The baseline entry of one check result."""
    return {
        "type": check.type,
        "figures": dict(result.figures),
        "passed": result.passed,
        "model": model_digest(run),
        "fingerprints": fingerprints(run, check),
    }


class Baseline:
    """A baseline file: read, compared against, and written."""

    def __init__(self, path: Path, entries: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = entries or {}

    @classmethod
    def load(cls, path: Path) -> Baseline:
        if not path.is_file():
            raise SpecError(
                "baseline file not found",
                file=path,
                field="baseline",
                fix="write one with --robustcheck-save-baseline (or "
                "robustcheck run --save-baseline) on the released model",
            )
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(f"cannot read the baseline: {exc}", file=path) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise SpecError(f"not a robustcheck baseline (format {FORMAT})", file=path)
        return cls(path, doc.get("specs", {}))

    def add(self, run: SpecRun, check: CheckSpec, result: CheckResult) -> None:
        key = spec_key(run, self.path)
        self.entries.setdefault(key, {})[check.name] = record(run, check, result)

    def save(self) -> None:
        from robustcheck import __version__

        doc = {"format": FORMAT, "robustcheck": __version__, "specs": self.entries}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=float))

    def compare(self, run: SpecRun, check: CheckSpec, result: CheckResult) -> CheckResult:
        """Apply the check's regression test against this baseline to ``result``."""
        key = spec_key(run, self.path)
        entry = self.entries.get(key, {}).get(check.name)
        if entry is None:
            known = ", ".join(sorted(self.entries.get(key, {}))) or "none"
            return _refuse(
                result,
                f"the baseline {self.path.name} has no check "
                f"{check.name!r} for {key} (it has: {known})",
            )
        now = fingerprints(run, check)
        for name, digest in entry["fingerprints"].items():
            if now.get(name) != digest:
                return _refuse(
                    result,
                    f"the baseline was made with a different {name} "
                    f"(sha256 {digest[:12]}, now {str(now.get(name))[:12]})",
                )
        return regression(result, entry["figures"], check.options)


def _refuse(result: CheckResult, reason: str) -> CheckResult:
    result.passed = False
    result.summary = f"cannot compare with the baseline: {reason} | {result.summary}"
    return result


def regression(result: CheckResult, old: dict[str, Any], options: dict[str, Any]) -> CheckResult:
    """One-sided test that the new figure is not worse than the baseline's."""
    rule = REGRESSION_FIGURES[result.type]
    for figures, which in ((result.figures, "this run"), (old, "the baseline")):
        if rule.figure not in figures and rule.figure != "abs_bias":
            return _refuse(result, f"{which} has no {rule.figure} to compare")
        if rule.error is None and not figures.get("n_events"):
            return _refuse(result, f"{which} has no correctly classified events")
    tolerance = float(options.get("regression_tolerance") or 0.0)
    confidence = float(options.get("regression_confidence") or 0.95)
    new = _figures_for_regression(result.figures)
    old = _figures_for_regression(old)
    worse = new[rule.figure] - old[rule.figure]
    if not rule.lower_is_better:
        worse = -worse
    if rule.error is None:  # two proportions, pooled under the null of no change
        k = new["n_fooled"] + old["n_fooled"]
        n = new["n_events"] + old["n_events"]
        pooled = k / n if n else 0.0
        error = math.sqrt(pooled * (1 - pooled) * (1 / new["n_events"] + 1 / old["n_events"]))
    else:
        error = math.hypot(new[rule.error], old[rule.error])
    from scipy.stats import norm

    z = (worse - tolerance) / error if error > 0 else (math.inf if worse > tolerance else 0.0)
    critical = float(norm.ppf(confidence))
    regressed = z > critical
    result.figures.update(
        baseline_value=old[rule.figure],
        regression_difference=worse,
        regression_significance=z,
        regression_critical=critical,
    )
    word = "worse" if worse > 0 else "better"
    line = (
        f"{rule.figure} {old[rule.figure]:.4g} (baseline) -> {new[rule.figure]:.4g}: "
        f"{abs(worse):.3g} {word}, {z:+.2f} sigma; a regression is > {critical:.2f} sigma"
        + (f" beyond a tolerance of {tolerance:g}" if tolerance else "")
    )
    if regressed:
        result.passed = False
        result.summary = f"regression against the baseline: {line} | {result.summary}"
    else:
        result.details.append(f"no regression against the baseline: {line}")
    return result


def _figures_for_regression(figures: dict[str, Any]) -> dict[str, float]:
    out = {k: v for k, v in figures.items() if isinstance(v, (int, float))}
    if "bias" in out:
        out["abs_bias"] = abs(out["bias"])
    return out
