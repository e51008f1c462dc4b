"""Baselines: the released model's figures, and regression tests of a new model against them.

A baseline file records, per spec and check, the figures with their uncertainties, the seeds,
and fingerprints of the model, the data, the envelope and the attack. A check that asks for
``no_regression`` fails when its figure is worse than the baseline's beyond a one-sided test
at ``regression_confidence``, after an optional ``regression_tolerance``: fooling rates with
an exact test at every count (:func:`exact_worse_pvalue`), the other figures with a z-test on
their standard errors. A baseline made on other data, another envelope or another attack is
refused with a message, never compared.

Saving merges: under the file's lock (``NAME.lock`` beside it) the file is read, only the
entries this run produced are replaced, and the whole is written atomically. Entries of other
specs, of deselected checks and of other processes stay. A file that is not a baseline is
never overwritten, and loading one raises a SpecError naming the file and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustcheck import registry
from robustcheck.declaration import RegressionFigure as RegressionFigure  # re-exported
from robustcheck.digest import file_digest, json_digest
from robustcheck.errors import SpecError
from robustcheck.event_random import SCHEME
from robustcheck.report.records import clean
from robustcheck.result import CheckResult

if TYPE_CHECKING:
    from robustcheck.spec import CheckSpec, DataSpec, Spec

FORMAT = 1
RANDOM_STREAMS = "random streams"  # the fingerprint naming robustcheck.event_random's scheme


def _selection(data: DataSpec) -> dict[str, object]:
    """What a [data.NAME] table selects, but its path; ``keep_events`` only when the sample
    is streamed (it sets the kept sample). The chunk size changes no figure (every event has
    its own random streams), so it is left out."""
    # strict_bounds only turns a warning into an error: it changes no figure
    skip = ("path", "strict_bounds", "chunk_size")
    out = {k: v for k, v in asdict(data).items() if k not in skip}
    if data.chunk_size is None:
        del out["keep_events"]
    return out


def fingerprints(spec: Spec, check: CheckSpec) -> dict[str, str]:
    """What must match for two runs of a check to be comparable."""
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
        implementation = registry.attacks()[spec.attacks[attack].method].load()
        if getattr(implementation, "couples_events", False) is not True:
            options.pop("batch_size", None)  # changes no figure but a coupled attack's
        if options.get("on_gradient_failure") == "error":  # the default: no figure changes
            del options["on_gradient_failure"]
        out["attack"] = json_digest({"method": spec.attacks[attack].method, **options})
    out[RANDOM_STREAMS] = SCHEME
    settings = {k: v for k, v in check.options.items() if not k.startswith("regression")}
    settings.pop("no_regression", None)
    out["check"] = json_digest({"type": check.type, **settings})
    return out


def spec_key(spec: Spec, baseline_file: Path) -> str:
    """The spec's path relative to the baseline file's folder, so baselines travel."""
    path = Path(spec.path)
    try:
        return path.resolve().relative_to(baseline_file.resolve().parent).as_posix()
    except ValueError:
        return path.name


def record(spec: Spec, check: CheckSpec, result: CheckResult, model: str) -> dict[str, Any]:
    """The baseline entry of one check result; ``model`` is the model's digest."""
    return {
        "type": check.type,
        "figures": dict(result.figures),
        "passed": result.passed,
        "model": model,
        "fingerprints": fingerprints(spec, check),
    }


def lock_path(path: Path) -> Path:
    """The lock file beside a baseline: ``baseline.json.lock``."""
    return path.with_name(path.name + ".lock")


REWRITE = (
    "write it again with --robustcheck-save-baseline (or robustcheck run --save-baseline) "
    "on the released model, or restore it from version control"
)


def read_entries(path: Path, writing: bool = False) -> dict[str, dict[str, Any]]:
    """The entries of a baseline file, or one SpecError naming the file, what is wrong and
    the fix (``writing``: the file was about to be merged into, and is left as it is)."""
    fix = REWRITE
    if writing:
        fix = f"move it away or choose another file: it is left as it is; or {REWRITE}"

    def broken(message: str, field: str | None = None) -> SpecError:
        return SpecError(f"not a robustcheck baseline: {message}", file=path, field=field, fix=fix)

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(
            f"cannot read the baseline: {exc.strerror or exc}", file=path, fix=fix
        ) from None
    except UnicodeDecodeError as exc:
        raise broken(f"not UTF-8 text (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise broken(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise broken(f"a JSON {type(doc).__name__}, not an object")
    if doc.get("format") != FORMAT:
        raise broken(f"format {doc.get('format')!r}, expected {FORMAT}", "format")
    specs = doc.get("specs", {})
    if not isinstance(specs, dict):
        raise broken(f"a {type(specs).__name__}, expected an object of spec paths", "specs")
    for key, checks in specs.items():
        if not isinstance(checks, dict):
            raise broken(f"a {type(checks).__name__}, expected an object of checks", f"specs.{key}")
        for name, entry in checks.items():
            where = f"specs.{key}.{name}"
            if not isinstance(entry, dict):
                raise broken(f"a {type(entry).__name__}, expected an object", where)
            for field, kind in ENTRY_FIELDS.items():
                if field not in entry:
                    raise broken(f"no {field!r}", where)
                if not isinstance(entry[field], kind):
                    raise broken(f"{field!r} is a {type(entry[field]).__name__}", where)
            if not all(isinstance(v, str) for v in entry["fingerprints"].values()):
                raise broken("fingerprints must be strings", f"{where}.fingerprints")
    return specs


ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "figures": dict,
    "fingerprints": dict,
}


@dataclass
class SaveOutcome:
    """What a baseline save did: entries written by this run, entries kept from the file."""

    path: Path
    written: int = 0
    kept: int = 0

    def line(self) -> str:
        """'baseline.json (2 entries written, 3 other entries kept)'."""
        kept = f", {_entries(self.kept)} kept from before" if self.kept else ""
        return f"{self.path} ({_entries(self.written)} written{kept})"


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


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
        return cls(path, read_entries(path))

    def add(self, spec: Spec, check: CheckSpec, result: CheckResult, model: str) -> None:
        """Record one check's result; ``model`` is the digest of the model that gave it."""
        key = spec_key(spec, self.path)
        self.entries.setdefault(key, {})[check.name] = record(spec, check, result, model)

    def save(self, notice: Callable[[str], None] | None = None) -> SaveOutcome:
        """Merge this run's entries into the file, under its lock, and write it atomically.

        Only the (spec, check) entries this run produced are replaced; every other entry of
        the file is kept, so a ``-k`` subset, another spec or a concurrent run updates its
        own entries only. A file that is not a baseline is never overwritten (SpecError).
        """
        from robustcheck import __version__
        from robustcheck.atomic import locked, write_json

        outcome = SaveOutcome(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(lock_path(self.path), f"the baseline {self.path}", notice):
            merged = read_entries(self.path, writing=True) if self.path.exists() else {}
            outcome.kept = sum(len(checks) for checks in merged.values())
            for key, checks in self.entries.items():
                for name, entry in checks.items():
                    outcome.kept -= name in merged.get(key, {})
                    merged.setdefault(key, {})[name] = entry
                    outcome.written += 1
            doc = clean({"format": FORMAT, "robustcheck": __version__, "specs": merged})
            write_json(self.path, doc, indent=2, sort_keys=True, allow_nan=False)
        return outcome

    def compare(self, spec: Spec, check: CheckSpec, result: CheckResult) -> CheckResult:
        """Apply the check's regression test against this baseline to ``result``."""
        key = spec_key(spec, self.path)
        entry = self.entries.get(key, {}).get(check.name)
        if entry is None:
            known = ", ".join(sorted(self.entries.get(key, {}))) or "none"
            return _refuse(
                result,
                f"the baseline {self.path.name} has no check "
                f"{check.name!r} for {key} (it has: {known})",
            )
        now = fingerprints(spec, check)
        for name, digest in entry["fingerprints"].items():
            if now.get(name) != digest:
                return _refuse(
                    result,
                    f"the baseline was made with a different {name} "
                    f"(sha256 {digest[:12]}, now {str(now.get(name))[:12]})",
                )
        for name in now.keys() - entry["fingerprints"].keys():
            if name == RANDOM_STREAMS:
                return _refuse(
                    result,
                    "the baseline was made with an earlier robustcheck, whose random numbers "
                    f"were drawn per batch, not per event ({SCHEME}): its seeded figures "
                    "differ; record the baseline again (--robustcheck-save-baseline)",
                )
        return regression(result, entry["figures"], check.options)


def _refuse(result: CheckResult, reason: str) -> CheckResult:
    result.passed = False
    result.summary = f"cannot compare with the baseline: {reason} | {result.summary}"
    return result


def regression(result: CheckResult, old: dict[str, Any], options: dict[str, Any]) -> CheckResult:
    """One-sided test that the new figure is not worse than the baseline's.

    Fooling rates (two binomial counts) take the exact unconditional test of
    :func:`exact_worse_pvalue` at every count; the other figures a z-test on their standard
    errors added in quadrature. ``regression_significance`` is the test's z (for the exact
    test, the normal quantile of its p-value), ``regression_pvalue`` its p-value.
    """
    declared = registry.check_declaration(result.type)
    rule = declared.regression if declared is not None else None
    if rule is None:
        return _refuse(result, f"check type {result.type!r} declares no regression figure")
    for figures, which in ((result.figures, "this run"), (old, "the baseline")):
        try:
            rule.value(figures)
        except (KeyError, TypeError, ValueError):
            return _refuse(result, f"{which} has no {rule.figure} to compare")
        if rule.error is None and not figures.get("n_events"):
            return _refuse(result, f"{which} has no correctly classified events")
    tolerance = float(options.get("regression_tolerance") or 0.0)
    confidence = float(options.get("regression_confidence") or 0.95)
    new = _figures_for_regression(result.figures, rule)
    old = _figures_for_regression(old, rule)
    worse = new[rule.figure] - old[rule.figure]
    if not rule.lower_is_better:
        worse = -worse
    from scipy.stats import norm

    if rule.error is None:  # two binomial counts: exact at every count
        counts = [(int(f["n_fooled"]), int(f["n_events"])) for f in (new, old)]
        if not rule.lower_is_better:
            counts.reverse()
        (k_worse, n_worse), (k_better, n_better) = counts
        pvalue = exact_worse_pvalue(k_worse, n_worse, k_better, n_better, tolerance)
        z = float(norm.isf(pvalue))
        test = f"p = {pvalue:.3g}, exact test"
    else:
        error = math.hypot(new[rule.error], old[rule.error])
        z = (worse - tolerance) / error if error > 0 else (math.inf if worse > tolerance else 0.0)
        pvalue = float(norm.sf(z))
        test = f"p = {pvalue:.3g}"
    critical = float(norm.ppf(confidence))
    regressed = pvalue < 1.0 - confidence
    result.figures.update(
        baseline_value=old[rule.figure],
        regression_difference=worse,
        regression_significance=z,
        regression_pvalue=pvalue,
        regression_critical=critical,
    )
    word = "worse" if worse > 0 else "better"
    line = (
        f"{rule.figure} {old[rule.figure]:.4g} (baseline) -> {new[rule.figure]:.4g}: "
        f"{abs(worse):.3g} {word}, {z:+.2f} sigma ({test}); a regression is > {critical:.2f} "
        "sigma" + (f" beyond a tolerance of {tolerance:g}" if tolerance else "")
    )
    if regressed:
        result.passed = False
        result.summary = f"regression against the baseline: {line} | {result.summary}"
    else:
        result.details.append(f"no regression against the baseline: {line}")
    return result


# The exact test of two fooling rates. Under the null hypothesis the new rate is at most the
# old one plus the tolerance; the statistic is the score z of Farrington and Manning (the
# pooled two-proportion z without a tolerance); its p-value is the largest probability, over
# the old rate (the nuisance parameter), of a table at least as extreme (Barnard; Chan 1998
# with a tolerance). Berger and Boos (1994): the old rate is searched over its 99.9%
# Clopper-Pearson interval and 0.001 is added to the p-value, which keeps the test exact and
# the search short. Measured false-alarm rates: benchmarks/regression_calibration.py.
NUISANCE_GAMMA = 1e-3
NUISANCE_GRID = 48
TAIL = 1e-14  # binomial tail left out of the sum, added to the p-value


def score_z(k1: Any, n1: int, k2: Any, n2: int, tolerance: float = 0.0) -> Any:
    """Score z of H0: p1 - p2 <= tolerance for k1 of n1 against k2 of n2 (arrays broadcast):
    the difference less the tolerance over its standard error at the restricted maximum
    likelihood rates (Farrington and Manning 1990); the pooled z without a tolerance."""
    import numpy as np

    k1 = np.asarray(k1, dtype=np.float64)
    k2 = np.asarray(k2, dtype=np.float64)
    p1, p2 = k1 / n1, k2 / n2
    if tolerance == 0.0:
        r1 = r2 = (k1 + k2) / (n1 + n2)
    else:
        r1, r2 = restricted_rates(p1, n1, p2, n2, tolerance)
    variance = r1 * (1.0 - r1) / n1 + r2 * (1.0 - r2) / n2
    diff = p1 - p2 - tolerance
    sign = np.where(diff > 1e-12, np.inf, np.where(diff < -1e-12, -np.inf, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / np.sqrt(variance)
    return np.where(variance > 0, z, sign)


def restricted_rates(p1: Any, n1: int, p2: Any, n2: int, tolerance: float) -> tuple[Any, Any]:
    """The rates of largest likelihood with r1 - r2 = tolerance, for observed rates p1 of n1
    and p2 of n2: the closed-form root of Farrington and Manning's cubic."""
    import numpy as np

    theta = n2 / n1
    a = 1.0 + theta
    b = -(1.0 + theta + p1 + theta * p2 + tolerance * (theta + 2.0))
    c = tolerance**2 + tolerance * (2.0 * p1 + theta + 1.0) + p1 + theta * p2
    d = -p1 * tolerance * (1.0 + tolerance)
    v = b**3 / (27.0 * a**3) - b * c / (6.0 * a * a) + d / (2.0 * a)
    u = np.sign(v) * np.sqrt(np.maximum(b * b / (9.0 * a * a) - c / (3.0 * a), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(u != 0, v / u**3, 0.0)
    w = (math.pi + np.arccos(np.clip(ratio, -1.0, 1.0))) / 3.0
    r1 = np.clip(2.0 * u * np.cos(w) - b / (3.0 * a), tolerance, 1.0)
    return r1, r1 - tolerance


def exact_worse_pvalue(
    k1: int, n1: int, k2: int, n2: int, tolerance: float = 0.0, gamma: float = NUISANCE_GAMMA
) -> float:
    """Exact one-sided p-value of "rate 1 (k1 of n1) exceeds rate 2 (k2 of n2) by more than
    ``tolerance``", valid at every count (``gamma = 0``: the search over the whole range of
    the old rate, as Barnard's test)."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    from scipy.stats import beta, binom

    observed = float(score_z(k1, n1, k2, n2, tolerance))
    if math.isfinite(observed):  # tables tied with the observed one count as extreme
        observed -= 1e-9 * max(1.0, abs(observed))
    low, high = 0.0, 1.0
    if gamma > 0:
        low = float(beta.ppf(gamma / 2, k2, n2 - k2 + 1)) if k2 > 0 else 0.0
        high = float(beta.ppf(1 - gamma / 2, k2 + 1, n2 - k2)) if k2 < n2 else 1.0
    # old counts that matter for any old rate in [low, high]; the rest is at most 2 * TAIL
    first = int(binom.ppf(TAIL, n2, low)) if low > 0 else 0
    last = int(binom.isf(TAIL, n2, high)) if high < 1 else n2
    k2s = np.arange(max(first - 1, 0), min(last + 1, n2) + 1)
    # the extreme tables: new counts from `need` up, for each old count (n1 + 1: none). The
    # score z rises with the new count; a running minimum makes the region monotone in the
    # old count too, so the largest probability under the null lies where new = old + tolerance
    lo = np.zeros(k2s.shape, dtype=np.int64)
    hi = np.full(k2s.shape, n1 + 1, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        extreme = (mid <= n1) & (score_z(np.minimum(mid, n1), n1, k2s, n2, tolerance) >= observed)
        hi = np.where(extreme, mid, hi)
        lo = np.where(extreme, lo, mid + 1)
    need = np.minimum.accumulate(lo[::-1])[::-1]

    def probability(rate: float) -> float:
        new_rate = min(rate + tolerance, 1.0)
        return float(np.sum(binom.pmf(k2s, n2, rate) * binom.sf(need - 1, n1, new_rate)))

    grid = np.linspace(low, high, NUISANCE_GRID)
    values = [probability(rate) for rate in grid]
    best = int(np.argmax(values))
    peak = values[best]
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    if right > left:
        found = minimize_scalar(
            lambda rate: -probability(rate),
            bounds=(left, right),
            method="bounded",
            options={"xatol": 1e-6 * (right - left)},
        )
        peak = max(peak, -float(found.fun))
    return min(1.0, peak + 2 * TAIL + gamma)


def _figures_for_regression(figures: dict[str, Any], rule: RegressionFigure) -> dict[str, float]:
    """The numeric figures, with the compared one (derived when the check declares so)."""
    out = {k: v for k, v in figures.items() if isinstance(v, (int, float))}
    out[rule.figure] = rule.value(figures)
    return out
