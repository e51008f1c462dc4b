"""Check results: verdict, main figure, threshold and details, ready for any report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """The outcome of one check; ``figures`` are the numbers reports and junitxml record."""

    spec: str
    name: str
    type: str
    passed: bool
    summary: str
    figures: dict[str, float | int | str] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    attack: str | None = None
    nominal: dict[str, Any] | None = None  # the spec's nominal performance (sanity gates)

    def message(self) -> str:
        """The failure (or success) text shown to the user."""
        return "\n".join([self.summary, *self.details])

    def properties(self) -> list[tuple[str, Any]]:
        """(name, value) pairs for junitxml ``user_properties``."""
        return [("check", self.name), ("passed", self.passed), *self.figures.items()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparisons(self) -> list[Comparison]:
        """Each figure this check held against a threshold, read from ``figures``."""
        return comparisons_of(self.type, self.figures)

    def headline(self) -> tuple[str, str]:
        """(figure, threshold) texts of the deciding comparison, for summary tables.

        The deciding comparison is the first that does not hold, else the first one.
        """
        f = self.figures
        if self.type == "fooling_rate" and "fooling_rate" in f and "ci_high" in f:
            cl = f"{100 * float(f.get('confidence', 0.95)):g}% CL"
            figure = f"{float(f['fooling_rate']):.3g} ({cl} {float(f['ci_low']):.3g}-"
            figure += f"{float(f['ci_high']):.3g})"
            return figure, f"upper limit <= {float(f['threshold']):g}"
        found = self.comparisons()
        if not found:
            value = f.get("threshold")
            return "", "" if value is None else str(value)
        deciding = next((c for c in found if not c.holds), found[0])
        return deciding.figure_text(), deciding.threshold_text()


@dataclass(frozen=True)
class Comparison:
    """One measured figure held against one threshold of a check."""

    label: str
    figure: float
    op: str  # "<=" or ">="
    threshold: float
    where: str | None = None

    @property
    def holds(self) -> bool:
        if self.op == "<=":
            return self.figure <= self.threshold
        return self.figure >= self.threshold

    def figure_text(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"{self.label} {self.figure:.3g}{where}"

    def threshold_text(self) -> str:
        return f"{self.op} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "holds": self.holds}


Figures = dict[str, Any]

# How the built-in checks record thresholds in ``figures``: check type -> (threshold key,
# label, measured figure, op). ``threshold_OPTION`` keys (invariance) are read generically.
_RECORDED_LIMITS: dict[str, list[tuple[str, str, Callable[[Figures], float], str]]] = {
    "fooling_rate": [
        ("threshold", "fooling rate upper limit", lambda f: f["ci_high"], "<="),
    ],
    "resilience": [
        ("threshold", "AUC change (%)", lambda f: f["auc_change_percent"], "<="),
        ("min_auc", "min AUC", lambda f: min(f["auc_nominal"], f["auc_alternative"]), ">="),
    ],
    "auc_under_attack": [
        ("threshold", "AUC drop", lambda f: f["auc_drop"], "<="),
        ("min_auc", "AUC under attack", lambda f: f["auc_adversarial"], ">="),
    ],
    "fraction_bias": [
        ("threshold", "|bias|", lambda f: abs(f["bias"]), "<="),
        ("max_pull", "|pull|", lambda f: abs(f["pull"]), "<="),
    ],
}

# ``threshold_OPTION`` -> (label, figure key, key of the feature it belongs to, op)
_KNOWN_OPTIONS: dict[str, tuple[str, str, str | None, str]] = {
    "ks_min_pvalue": ("min KS p-value", "min_ks_pvalue", "min_ks_feature", ">="),
    "chi2_min_pvalue": ("min chi2 p-value", "min_chi2_pvalue", "min_chi2_feature", ">="),
    "max_jsd": ("max JS distance", "max_jsd", "max_jsd_feature", "<="),
    "max_correlation_change": ("max correlation change", "correlation_change", None, "<="),
    "max_correlation_frobenius": (
        "relative Frobenius change",
        "correlation_frobenius",
        None,
        "<=",
    ),
}


def _option_limit(option: str) -> tuple[str, str, str | None, str]:
    """How a ``threshold_OPTION`` figure pairs with its measured figure."""
    if option in _KNOWN_OPTIONS:
        return _KNOWN_OPTIONS[option]
    if option.endswith("_min_pvalue"):
        stem = option[: -len("_min_pvalue")]
        return f"min {stem} p-value", f"min_{stem}_pvalue", f"min_{stem}_feature", ">="
    if option.startswith(("max_", "min_")):
        return option.replace("_", " "), option[4:], None, "<=" if option[:3] == "max" else ">="
    return option.replace("_", " "), option, None, "<="


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def comparisons_of(check_type: str, figures: Figures) -> list[Comparison]:
    """The comparisons a check recorded in its figures, for reports."""
    out = []
    for key, label, measure, op in _RECORDED_LIMITS.get(check_type, []):
        if _number(figures.get(key)):
            try:
                value = float(measure(figures))
            except (KeyError, TypeError, ValueError):
                continue
            out.append(Comparison(label, value, op, float(figures[key])))
    for key, threshold in figures.items():
        if not key.startswith("threshold_") or not _number(threshold):
            continue
        option = key[len("threshold_") :]
        label, figure_key, where_key, op = _option_limit(option)
        value = next((figures[k] for k in (figure_key, option) if _number(figures.get(k))), None)
        if value is not None:
            where = figures.get(where_key) if where_key else None
            out.append(
                Comparison(
                    label, float(value), op, float(threshold), None if where is None else str(where)
                )
            )
    return out
