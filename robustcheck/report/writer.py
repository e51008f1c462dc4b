"""Writes a report folder: report.json, report.html and plots/*.png.

A folder that cannot be written or a plot that fails becomes a line in ``problems``, never
an exception: the report must not turn a passing run into a crash. Every file is written
atomically (robustcheck.atomic) under the folder's lock file ``.robustcheck.lock``, so two
runs writing one folder never leave it half-written or mixed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcheck.report import html, markdown, plots
from robustcheck.report import json as json_report
from robustcheck.report.figures import Plot

MAX_HISTOGRAMS = 24  # per attack; with more features, the most changed ones


@dataclass
class ReportOutcome:
    folder: Path
    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # plots of earlier runs

    @property
    def html(self) -> Path | None:
        return next((p for p in self.written if p.name == "report.html"), None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def spec_slug(path: str) -> str:
    """A file-name prefix unique to a spec path."""
    stem = Path(path).name.split(".")[0]
    return f"{_slug(stem)}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"


def fooling_rate_limit(spec: dict[str, Any], attack: str) -> float | None:
    """The strictest ``max`` of the fooling-rate checks on this attack."""
    limits = [
        float(c["options"]["max"])
        for c in spec["checks"]
        if c["type"] == "fooling_rate" and c.get("attack_name") == attack and "max" in c["options"]
    ]
    return min(limits) if limits else None


def plotted_histograms(histograms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_HISTOGRAMS per attack: those with the smallest KS p-values, in feature
    order (report.json keeps them all)."""
    if len(histograms) <= MAX_HISTOGRAMS:
        return histograms
    order = sorted(
        range(len(histograms)),
        key=lambda i: (histograms[i].get("ks_pvalue") is None, histograms[i].get("ks_pvalue") or 0),
    )
    keep = sorted(order[:MAX_HISTOGRAMS])
    return [histograms[i] for i in keep]


def radius_plots(
    spec: dict[str, Any], name: str, radius: dict[str, Any], prefix: str
) -> list[tuple[Plot, Any]]:
    """A min_epsilon attack's radius distribution and fooling rate vs epsilon curve, with the
    thresholds of the checks that read them."""
    checks = [c for c in spec["checks"] if c.get("attack_name") == name]
    quantiles = [
        (float(c["options"]["min"]), float(c["options"].get("quantile", 0.05)))
        for c in checks
        if c["type"] == "robust_radius" and "min" in c["options"]
    ]
    limits = [
        (float(c["options"].get("epsilon", radius["max_epsilon"])), float(c["options"]["max"]))
        for c in checks
        if c["type"] == "fooling_rate" and "max" in c["options"]
    ]
    stem = f"{prefix}__{_slug(name)}"
    return [
        (
            Plot("radius", f"robustness radius: {name}", f"{stem}__radius.png", name),
            lambda: plots.radius_histogram(radius, name, [m for m, _ in quantiles]),
        ),
        (
            Plot(
                "scan",
                f"fooling rate vs epsilon (radius curve): {name}",
                f"{stem}__curve.png",
                name,
            ),
            lambda: plots.radius_curve(radius, name, limits, quantiles),
        ),
    ]


def attack_extra_plots(name: str, attack: dict[str, Any], prefix: str) -> list[tuple[Plot, Any]]:
    """An attack's discriminant distribution and its fooled events' pulls per feature."""
    stem = f"{prefix}__{_slug(name)}"
    todo: list[tuple[Plot, Any]] = []
    if (attack.get("discriminant") or {}).get("samples"):
        plot = Plot(
            "discriminant",
            f"discriminant per true class: nominal, {name}, alternative",
            f"{stem}__discriminant.png",
            name,
            data=f"attacks.{name}.discriminant",
        )
        todo.append((plot, lambda: plots.discriminant(attack["discriminant"], name)))
    for number, pull in enumerate((attack.get("pulls") or [])[:MAX_HISTOGRAMS]):
        plot = Plot(
            "pulls",
            f"pulls of the fooled events: {pull['input']} {pull['feature']}, {name}",
            f"{stem}__pulls_{_slug(pull['input'])}_{_slug(pull['feature'])}.png",
            name,
            data=f"attacks.{name}.pulls[{number}]",
        )
        todo.append((plot, lambda pull=pull: plots.pulls(pull, name)))
    return todo


def check_plots(spec: dict[str, Any], prefix: str) -> list[tuple[Plot, Any]]:
    """The plots of checks that carry their own data: a loss_surface check's curves and grid,
    an invariance check's compared samples per true class (at most MAX_HISTOGRAMS each)."""
    todo: list[tuple[Plot, Any]] = []
    signal = spec.get("signal_class")
    for index, check in enumerate(spec["checks"]):
        data = check.get("plot_data") or {}
        stem = f"{prefix}__check{index}_{_slug(check['name'])}"
        where = f"checks[{index}].plot_data"
        surface = data.get("loss_surface")
        if surface:
            plot = Plot(
                "loss_surface",
                f"loss surface: {check['name']}",
                f"{stem}__loss.png",
                check=check["name"],
                data=f"{where}.loss_surface",
            )
            todo.append((plot, lambda s=surface, c=check: plots.loss_profiles(s, c["name"])))
            if surface.get("grid") is not None:
                plot = Plot(
                    "loss_surface_grid",
                    f"loss surface grid: {check['name']}",
                    f"{stem}__loss_grid.png",
                    check=check["name"],
                    data=f"{where}.loss_surface",
                )
                todo.append((plot, lambda s=surface, c=check: plots.loss_grid(s, c["name"])))
        found = data.get("invariance")
        if found:
            independent = found["compare_to"] == "independent"
            labels = (
                ("independent nominal half", f"attacked half ({found['attack']})")
                if independent
                else ("nominal (same events)", f"attacked ({found['attack']})")
            )
            for number, h in enumerate(found["histograms"][:MAX_HISTOGRAMS]):
                title = f"{check['name']}: {h['input']} {h['feature']}, {labels[0]} vs attacked"
                plot = Plot(
                    "invariance_histogram",
                    title,
                    f"{stem}__{_slug(h['input'])}_{_slug(h['feature'])}.png",
                    found["attack"],
                    check=check["name"],
                    data=f"{where}.invariance.histograms[{number}]",
                )
                todo.append(
                    (
                        plot,
                        lambda h=h, labels=labels, title=title: plots.class_comparison(
                            h,
                            ("reference", "attacked"),
                            labels,
                            title,
                            signal,
                            None,
                            "attacked / ref.",
                        ),
                    )
                )
    return todo


def spec_plots(spec: dict[str, Any]) -> list[Plot]:
    """Draw every plot of one spec; a failure is kept as the plot's ``error``."""
    prefix = f"plots/{spec_slug(spec['path'])}"
    todo: list[tuple[Plot, Any]] = []
    signal = spec.get("signal_class")
    for name, attack in spec["attacks"].items():
        shown = plotted_histograms(attack.get("histograms") or [])
        for h in shown:
            title = f"{h['input']} {h['feature']}: nominal vs {name}"
            plot = Plot(
                "histogram",
                title,
                f"{prefix}__{_slug(name)}__{_slug(h['input'])}_{_slug(h['feature'])}.png",
                name,
                data=f"attacks.{name}.histograms[{attack['histograms'].index(h)}]",
            )
            todo.append((plot, lambda h=h, name=name: plots.histogram(h, name, signal)))
        todo += attack_extra_plots(name, attack, prefix)
        if attack.get("scan"):
            limit = fooling_rate_limit(spec, name)
            plot = Plot(
                "scan",
                f"fooling rate vs epsilon: {name}",
                f"{prefix}__{_slug(name)}__scan.png",
                name,
            )
            todo.append(
                (plot, lambda a=attack, n=name, m=limit: plots.scan(a["scan"], n, m, a["epsilon"]))
            )
        if attack.get("radius"):
            todo += radius_plots(spec, name, attack["radius"], prefix)
    todo += check_plots(spec, prefix)
    curves = [(sample, curve) for sample, curve in (spec.get("roc") or {}).items()]
    curves += [
        (f"adversarial {name}", attack["roc"])
        for name, attack in spec["attacks"].items()
        if attack.get("roc")
    ]
    if curves:
        plot = Plot("roc", "ROC curves", f"{prefix}__roc.png", data="roc, attacks.NAME.roc")
        todo.append((plot, lambda: plots.roc(curves)))
    out = []
    for plot, draw in todo:
        try:
            plot.png = draw()
        except Exception as exc:  # a broken plot must not break the report
            plot.error = f"{type(exc).__name__}: {exc}"
        out.append(plot)
    return out


def pareto_groups(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Specs with a resilience check over the same nominal and alternative files, two or more
    per group, with their AUC, resilience and place on the Pareto frontier."""
    from robustcheck.pareto import pareto_front

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for spec in specs:
        data = spec.get("data") or {}
        key = tuple((data.get(s) or {}).get("sha256", "") for s in ("nominal", "alternative"))
        check = next(
            (
                c
                for c in spec["checks"]
                if c.get("type") == "resilience" and "auc_nominal" in (c.get("figures") or {})
            ),
            None,
        )
        if check is None or not all(key):
            continue
        figures = check["figures"]
        model = spec.get("model") or {}
        name = model.get("import") or Path(str(model.get("path") or spec["path"])).name
        groups.setdefault(key, []).append(
            {
                "name": name,
                "spec": spec["path"],
                "auc": figures["auc_nominal"],
                "auc_error": figures.get("auc_nominal_error"),
                "resilience": figures["auc_change_percent"],
                "resilience_error": figures.get("auc_change_percent_error"),
            }
        )
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        names = [m["name"] for m in members]
        for m in members:
            if names.count(m["name"]) > 1:
                m["name"] = f"{m['name']} ({Path(m['spec']).name})"
        front = pareto_front([(m["name"], m["auc"], m["resilience"]) for m in members])
        for m, point in zip(members, front, strict=True):
            m.update(on_front=point.on_front, dominated_by=point.dominated_by)
        out.append({"points": members})
    return out


# an absolute path inside a text: a "/" not preceded by a word character, a dot, a colon
# (URLs) or another slash, then characters that paths hold
_ABSOLUTE = re.compile(r"(?<![\w.~:/])/[^\s'\"`<>|:,;()\[\]{}]+")


def relative_paths(value: Any, folder: Path) -> Any:
    """``value`` (a JSON document) with every absolute path in its strings, keys included,
    written relative to the report folder, so that neither report.json nor report.html
    shows the folders of the machine that ran it.

    A path is recognised when it has two or more parts and its first folder exists here
    (``/tmp/...``, ``/home/...``): ``(a+b)/c`` or ``1/2`` are left alone.
    """
    if isinstance(value, str):
        return _relative_text(value, folder)
    if isinstance(value, list):
        return [relative_paths(v, folder) for v in value]
    if isinstance(value, dict):
        return {relative_paths(k, folder): relative_paths(v, folder) for k, v in value.items()}
    return value


def _relative_text(text: str, folder: Path) -> str:
    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        parts = Path(token).parts
        if len(parts) < 3 or not Path(parts[0], parts[1]).is_dir():
            return token
        tail = "/" if token.endswith("/") else ""
        return os.path.relpath(token, folder) + tail

    return _ABSOLUTE.sub(swap, text) if "/" in text else text


LOCK_NAME = ".robustcheck.lock"
# the plot files robustcheck names (see spec_plots and pareto_groups): only these are removed
OWN_PLOT = re.compile(r"^(?:[A-Za-z0-9_.-]+-[0-9a-f]{6}__[A-Za-z0-9_.-]+|pareto_\d+)\.png$")


def write_report(
    records: Iterable[dict[str, Any]],
    folder: str | Path,
    command: str,
    partial: dict[str, Any] | None = None,
    notice: Callable[[str], None] | None = None,
) -> ReportOutcome:
    """Write report.json, report.html and the plots of these check records into ``folder``.

    The report is this run's alone: ``partial`` (see :func:`json_report.partial`) says at its
    top when not every collected check ran. Plots are drawn first; then, under the folder's
    lock, every file is written atomically and the plots of earlier runs that this run did not
    draw are removed, so the folder never mixes two runs.
    """
    from robustcheck import atomic

    records = list(records)
    folder = Path(folder)
    outcome = ReportOutcome(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plots").mkdir(exist_ok=True)
    except OSError as exc:
        outcome.problems.append(f"cannot write the report to {folder}: {_reason(exc)}")
        return outcome
    document = json_report.build(records, command, partial=partial)
    why_not = plots.unavailable()
    drawn: dict[str, list[Plot]] = {}
    if why_not:
        outcome.problems.append(f"no plots in the report: {why_not}")
    elif plots.style_problem():
        outcome.problems.append(str(plots.style_problem()))
    for spec in document["specs"]:
        drawn[spec["path"]] = [] if why_not else spec_plots(spec)
    document["pareto"] = pareto_groups(document["specs"])
    pareto_png: dict[str, bytes] = {}
    for number, group in enumerate(document["pareto"]):
        if why_not:
            break
        group["file"] = f"plots/pareto_{number}.png"
        try:
            pareto_png[group["file"]] = plots.pareto(group["points"])
        except Exception as exc:  # a broken plot must not break the report
            outcome.problems.append(f"plot {group['file']} failed: {type(exc).__name__}: {exc}")
            group["file"] = None
    try:
        with atomic.locked(folder / LOCK_NAME, f"the report in {folder}", notice):
            _write_files(document, drawn, pareto_png, folder, outcome)
            _write_summary(records, folder, partial, outcome)
    except OSError as exc:  # the lock: another run held it too long, or it cannot be made
        outcome.problems.append(f"cannot write the report to {folder}: {_reason(exc)}")
    return outcome


def _write_files(
    document: dict[str, Any],
    drawn: dict[str, list[Plot]],
    pareto_png: dict[str, bytes],
    folder: Path,
    outcome: ReportOutcome,
) -> None:
    """The plots, the removal of stale ones, report.json and report.html (under the lock)."""
    from robustcheck import atomic

    written: set[str] = set()
    for spec in document["specs"]:
        spec["plots"] = []
        for plot in drawn[spec["path"]]:
            entry = {"kind": plot.kind, "title": plot.title, "attack": plot.attack}
            entry.update({k: v for k, v in (("check", plot.check), ("data", plot.data)) if v})
            if plot.error:
                outcome.problems.append(f"plot {plot.file} failed: {plot.error}")
                entry["error"] = plot.error
            else:
                assert plot.png is not None
                try:
                    atomic.write_bytes(folder / plot.file, plot.png)
                    entry["file"] = plot.file
                    written.add(Path(plot.file).name)
                except OSError as exc:
                    outcome.problems.append(f"cannot write {folder / plot.file}: {_reason(exc)}")
            spec["plots"].append(entry)
    for group in document["pareto"]:
        if group.get("file") in pareto_png:
            try:
                atomic.write_bytes(folder / group["file"], pareto_png[group["file"]])
                written.add(Path(group["file"]).name)
            except OSError as exc:
                outcome.problems.append(f"cannot write {folder / group['file']}: {_reason(exc)}")
                group["file"] = None
    outcome.removed = remove_stale_plots(folder / "plots", written, outcome.problems)
    document["problems"] = [*document["problems"], *outcome.problems]
    here = folder.resolve()
    public = relative_paths(document, here)
    shown = {relative_paths(path, here): plots_ for path, plots_ in drawn.items()}
    for name, write in (
        ("report.json", lambda: json_report.write(public, folder)),
        ("report.html", lambda: html.write(public, shown, folder)),
    ):
        try:
            outcome.written.append(write())
        except OSError as exc:
            outcome.problems.append(f"cannot write {folder / name}: {_reason(exc)}")
        except Exception as exc:  # one broken page must not cost the other file
            outcome.problems.append(f"cannot build {name}: {type(exc).__name__}: {exc}")


def _write_summary(
    records: list[dict[str, Any]],
    folder: Path,
    partial: dict[str, Any] | None,
    outcome: ReportOutcome,
) -> None:
    """summary.md beside report.html (paths relative to the folder)."""
    try:
        here = folder.resolve()
        outcome.written.append(markdown.write(relative_paths(records, here), here, partial))
    except OSError as exc:
        outcome.problems.append(f"cannot write {folder / 'summary.md'}: {_reason(exc)}")


def remove_stale_plots(plots_folder: Path, keep: set[str], problems: list[str]) -> list[Path]:
    """Remove the plots robustcheck drew in earlier runs (its own file names only) that this
    run did not draw: a check that did not run leaves no old picture behind."""
    removed = []
    for path in sorted(plots_folder.glob("*.png")):
        if path.name in keep or not OWN_PLOT.match(path.name):
            continue
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"cannot remove the old plot {path}: {_reason(exc)}")
    return removed


def _reason(exc: OSError) -> str:
    """'Permission denied (path)' from an OSError."""
    text = exc.strerror or str(exc)
    return f"{text} ({exc.filename})" if exc.filename else text
