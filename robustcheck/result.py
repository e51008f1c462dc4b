"""Check results: verdict, main figure, threshold and details, ready for any report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from robustcheck import registry
from robustcheck.declaration import Declaration, OptionLimit
from robustcheck.schema import is_number


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
        declared = _declaration(self.type)
        if declared is not None and declared.headline is not None:
            own = declared.headline(f)
            if own is not None:
                return own
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


def _declaration(check_type: str) -> Declaration | None:
    return registry.check_declaration(check_type)


def _option_limit(option: str, declared: Declaration | None) -> OptionLimit:
    """How a ``threshold_OPTION`` figure pairs with its measured figure: as the check type
    declares, else read from the option's name."""
    if declared is not None and option in declared.option_limits:
        return declared.option_limits[option]
    if option.endswith("_min_pvalue"):
        stem = option[: -len("_min_pvalue")]
        return OptionLimit(f"min {stem} p-value", f"min_{stem}_pvalue", f"min_{stem}_feature", ">=")
    if option.startswith(("max_", "min_")):
        op = "<=" if option[:3] == "max" else ">="
        return OptionLimit(option.replace("_", " "), option[4:], None, op)
    return OptionLimit(option.replace("_", " "), option, None, "<=")


def comparisons_of(check_type: str, figures: Figures) -> list[Comparison]:
    """The comparisons a check recorded in its figures, for reports: the limits its type
    declares, and every ``threshold_OPTION`` figure."""
    declared = _declaration(check_type)
    out = []
    for limit in declared.limits if declared is not None else ():
        if is_number(figures.get(limit.key)):
            try:
                value = limit.value(figures)
            except (KeyError, TypeError, ValueError):
                continue
            out.append(Comparison(limit.label, value, limit.op, float(figures[limit.key])))
    for key, threshold in figures.items():
        if not key.startswith("threshold_") or not is_number(threshold):
            continue
        option = key[len("threshold_") :]
        how = _option_limit(option, declared)
        value = next((figures[k] for k in (how.figure, option) if is_number(figures.get(k))), None)
        if value is not None:
            where = figures.get(how.where) if how.where else None
            out.append(
                Comparison(
                    how.label,
                    float(value),
                    how.op,
                    float(threshold),
                    None if where is None else str(where),
                )
            )
    return out
