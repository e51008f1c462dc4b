"""Pareto front of taggers over discrimination (AUC, higher is better) and resilience.

Resilience is the percent change of a tagger's AUC between generators (or any other
perturbation); lower is better. The value is used as given, so pass its absolute value when the
sign of the change should not matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ParetoPoint:
    """One tagger: its figures, whether it is on the front, and the taggers that dominate it."""

    name: str
    auc: float
    resilience: float
    on_front: bool
    dominated_by: list[str] = field(default_factory=list)


def dominates(p: tuple[str, float, float], q: tuple[str, float, float]) -> bool:
    """Whether ``p`` dominates ``q``: at least as good in both figures, strictly in one."""
    _, auc_p, res_p = p
    _, auc_q, res_q = q
    return auc_p >= auc_q and res_p <= res_q and (auc_p > auc_q or res_p < res_q)


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[ParetoPoint]:
    """Classify ``(name, auc, resilience_percent)`` points, in the given order.

    A point is on the front when nothing dominates it; identical points do not dominate each
    other, so both stay on the front. ``dominated_by`` lists the dominating names in input order.
    Names must be unique and figures finite.
    """
    pts = [(str(name), float(auc), float(res)) for name, auc, res in points]
    names = [p[0] for p in pts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate names in Pareto points: {', '.join(duplicates)}")
    for name, auc, res in pts:
        if not (math.isfinite(auc) and math.isfinite(res)):
            raise ValueError(f"point {name!r} has a non-finite figure: auc={auc}, resilience={res}")
    result = []
    for q in pts:
        by = [p[0] for p in pts if dominates(p, q)]
        result.append(ParetoPoint(q[0], q[1], q[2], on_front=not by, dominated_by=by))
    return result


@dataclass(frozen=True)
class TaggerFigures:
    """AUC on the nominal sample and resilience against the alternative, for one spec."""

    name: str
    spec: str
    auc: float
    auc_error: float
    auc_alternative: float
    resilience: float
    resilience_error: float


def tagger_figures(path: str, device: str | None = None, cluster: Any = None) -> TaggerFigures:
    """Evaluate one spec's tagger on its nominal and alternative samples (``cluster``: a
    robustcheck.distributed.DaskRanges that reads streamed samples range by range)."""
    from robustcheck.checks.resilience import sample_auc
    from robustcheck.core import SpecRun
    from robustcheck.errors import SpecError

    run = SpecRun.from_path(path, device=device, cluster=cluster)
    if "alternative" not in run.spec.data:
        raise SpecError(
            "the Pareto frontier needs [data.alternative] in every spec",
            file=run.spec.path,
            field="data",
            fix='add [data.alternative] path = "...", like nominal',
        )
    auc_nom, err_nom = sample_auc(run, "nominal")
    auc_alt, err_alt = sample_auc(run, "alternative")
    resilience = 100.0 * abs(auc_nom - auc_alt) / auc_nom
    return TaggerFigures(
        name=_model_name(run.spec.model.path),
        spec=str(run.spec.path),
        auc=auc_nom,
        auc_error=err_nom,
        auc_alternative=auc_alt,
        resilience=resilience,
        resilience_error=100.0 * math.hypot(err_nom, err_alt) / auc_nom,
    )


def _model_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def same_data(paths: Sequence[str]) -> None:
    """Refuse specs whose nominal or alternative samples are different files' contents."""
    from robustcheck.digest import file_digest, json_digest
    from robustcheck.errors import SpecError
    from robustcheck.spec import load_spec

    seen: dict[str, tuple[str, str]] = {}
    for path in paths:
        spec = load_spec(path)
        for sample in ("nominal", "alternative"):
            if sample not in spec.data:
                continue
            data = spec.data[sample]
            selection = {k: v for k, v in asdict(data).items() if k not in ("path", "name")}
            digest = file_digest(data.path) + json_digest(selection)
            if sample in seen and seen[sample][0] != digest:
                raise SpecError(
                    f"[data.{sample}] is not the same data as in {seen[sample][1]}",
                    file=path,
                    field=f"data.{sample}.path",
                    fix="compare taggers on the same nominal and alternative samples",
                )
            seen.setdefault(sample, (digest, str(path)))


def pareto_of_specs(
    paths: Sequence[str], device: str | None = None, cluster: Any = None
) -> list[tuple[TaggerFigures, ParetoPoint]]:
    """AUC and resilience of each spec's tagger, and which lie on the Pareto frontier; with a
    Dask ``cluster`` every spec at once, their ranges sharing its workers."""
    from robustcheck.errors import SpecError

    resolved = [str(Path(p).resolve()) for p in paths]
    for path in paths:
        if resolved.count(str(Path(path).resolve())) > 1:
            raise SpecError("the spec is given twice", file=path, fix="name each spec once")
    same_data(paths)
    if cluster is None:
        figures = [tagger_figures(path, device) for path in paths]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(paths), thread_name_prefix="robustcheck-spec") as pool:
            figures = list(pool.map(lambda path: tagger_figures(path, device, cluster), paths))
    names = [f.name for f in figures]
    labels = [f"{f.name} ({f.spec})" if names.count(f.name) > 1 else f.name for f in figures]
    front = pareto_front(
        [(label, f.auc, f.resilience) for label, f in zip(labels, figures, strict=True)]
    )
    return list(zip(figures, front, strict=True))


def pareto_table(rows: list[tuple[TaggerFigures, ParetoPoint]]) -> list[str]:
    """A text table of the frontier, best AUC first."""
    width = max(len(point.name) for _, point in rows)
    lines = [f"{'tagger':<{width}}  AUC              resilience (%)   Pareto"]
    for figures, point in sorted(rows, key=lambda row: -row[0].auc):
        verdict = "front" if point.on_front else "dominated by " + ", ".join(point.dominated_by)
        lines.append(
            f"{point.name:<{width}}  {figures.auc:.4f} ± {figures.auc_error:.4f}  "
            f"{figures.resilience:6.3f} ± {figures.resilience_error:.3f}   {verdict}"
        )
    return lines


def pareto_json(rows: list[tuple[TaggerFigures, ParetoPoint]]) -> list[dict[str, object]]:
    """The frontier as JSON-ready records."""
    return [
        {
            **asdict(figures),
            "name": point.name,
            "on_front": point.on_front,
            "dominated_by": point.dominated_by,
        }
        for figures, point in rows
    ]
