"""report.html: one self-contained page (CSS inline, plots as base64 PNG) per run."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from robustcheck.report.figures import Plot
from robustcheck.report.terminal import display_path, nominal_line, partial_line

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1180px; padding: 0 1em; color: #1f1f1f; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
.verdict { font-weight: bold; padding: 0.1em 0.5em; border-radius: 3px; color: white; }
.passed { background: #2e7d32; } .failed { background: #c62828; } .error { background: #6a1b9a; }
.totals span { margin-right: 1em; }
details pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
         gap: 0.8em; }
figure { margin: 0; border: 1px solid #eee; padding: 0.3em; min-width: 0; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 0.8em; color: #555; overflow-wrap: anywhere; }
.partial { background: #fdecea; border-left: 6px solid #c62828; padding: 0.6em 1em;
           margin: 0.8em 0; font-weight: bold; }
.partial ul { font-weight: normal; margin: 0.3em 0 0 0; font-size: 0.9em; }
.problem { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 0.4em 0.8em;
           margin: 0.4em 0; font-size: 0.9em; }
"""


def _verdict(verdict: str) -> str:
    return f'<span class="verdict {escape(verdict)}">{escape(verdict.upper())}</span>'


def _short_hash(entry: dict[str, Any] | None) -> str:
    if not entry or not entry.get("sha256"):
        return ""
    digest = escape(entry["sha256"])
    return f'<span class="hash" title="sha256 {digest}">{digest[:12]}</span>'


def _figure(plot: Plot) -> str:
    if plot.png is None:
        return (
            f'<div class="problem">plot <code>{escape(plot.file)}</code> ({escape(plot.title)}) '
            f"failed: {escape(plot.error or 'not drawn')}</div>"
        )
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure><img alt="{escape(plot.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(plot.title)} &middot; <code>{escape(plot.file)}</code>"
        f"</figcaption></figure>"
    )


def _files(info: dict[str, Any]) -> str:
    rows = []
    model = info.get("model") or {}
    if model:
        where = model.get("path") or model.get("import", "")
        backend = f" ({escape(model['backend'])})" if model.get("backend") else ""
        rows.append(
            f"<tr><th>model</th><td><code>{escape(where)}</code>{backend}</td>"
            f"<td>{_short_hash(model)}</td><td></td></tr>"
        )
        if model.get("weights"):
            rows.append(
                f"<tr><th>weights</th><td><code>{escape(model['weights']['path'])}</code></td>"
                f"<td>{_short_hash(model['weights'])}</td><td></td></tr>"
            )
    for name, data in (info.get("data") or {}).items():
        rows.append(
            f"<tr><th>data.{escape(name)}</th><td><code>{escape(data['path'])}</code></td>"
            f"<td>{_short_hash(data)}</td><td class='num'>{_events(data)}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<table><tr><th></th><th>file</th><th>sha256</th><th></th></tr>"
        + "".join(rows)
        + ("</table>")
    )


def _events(data: dict[str, Any]) -> str:
    n = data.get("n_events")
    return f"{n:,} events" if isinstance(n, int) else ""


def _checks(checks: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>check</th><th>type</th><th>figure</th><th>threshold</th><th>verdict</th>"
        "<th>attack</th><th>seconds</th></tr>"
    )
    rows = []
    for c in checks:
        text = c.get("error") or "\n".join([c["summary"], *c["details"]])
        attack = c.get("attack_name") or ""
        title = escape(c.get("attack") or "")
        rows.append(
            f"<tr><td>{escape(c['name'])}<details><summary>message</summary>"
            f"<pre>{escape(text)}</pre></details></td><td>{escape(c['type'])}</td>"
            f"<td>{escape(c['figure'])}</td><td>{escape(c['threshold'])}</td>"
            f'<td>{_verdict(c["verdict"])}</td><td title="{title}">{escape(attack)}</td>'
            f"<td class='num'>{c['seconds']:.2f}</td></tr>"
        )
    return f'<table class="checks">{head}{"".join(rows)}</table>'


def _attack(name: str, attack: dict[str, Any], drawn: list[Plot]) -> str:
    n_correct, n_fooled = attack.get("n_correct") or 0, attack.get("n_fooled") or 0
    rate = f" ({n_fooled / n_correct:.3g})" if n_correct else ""
    parts = [
        f"<h3>attack <code>{escape(name)}</code>: {escape(attack.get('description') or '')}</h3>",
        f'<p class="meta">{n_fooled:,} of {n_correct:,} correctly classified events fooled'
        f"{rate}; {attack.get('n_events', 0):,} events; computed in "
        f"{attack.get('seconds') or 0:.2f} s</p>",
    ]
    mine = [p for p in drawn if p.attack == name and p.check is None]
    shown = sum(p.kind == "histogram" for p in mine)
    total = len(attack.get("histograms") or ())
    if shown < total:
        parts.append(
            f'<p class="meta">histograms of the {shown} of {total} features with the smallest KS '
            "p-values; report.json holds all of them</p>"
        )
    if total and attack.get("histograms_note"):
        parts.append(f'<p class="meta">histograms {escape(attack["histograms_note"])}</p>')
    kinds = ("scan", "radius", "discriminant", "histogram")
    figures = [_figure(p) for kind in kinds for p in mine if p.kind == kind]
    if figures:
        parts.append(
            '<p class="meta">histograms per true class with statistical (Poisson) error bars; '
            "ratio panels: the nominal's relative error as a band around 1, the attacked "
            "sample's on the points</p>"
        )
        parts.append(f'<div class="plots">{"".join(figures)}</div>')
    pulls = [_figure(p) for p in mine if p.kind == "pulls"]
    if pulls:
        parts.append(
            f"<h4>shifts of the fooled events, in sigma ({escape(name)})</h4>"
            '<p class="meta">per feature, the entries of fooled events that the attack moved'
            "</p>"
        )
        parts.append(f'<div class="plots">{"".join(pulls)}</div>')
    return "\n".join(parts)


def _events_to_detect(rows: list[dict[str, Any]], limit: float | None = None) -> str:
    """The invariance check's events_to_detect per test, region and feature (or observable);
    with ``limit`` (control_region_events) the cells at or below it in bold."""
    if not rows:
        return ""
    tests = list(dict.fromkeys(r["test"] for r in rows))
    regions = list(dict.fromkeys(r["region"] for r in rows))
    features = list(dict.fromkeys(r["feature"] for r in rows))
    found = {(r["test"], r["region"], r["feature"]): r["events_to_detect"] for r in rows}
    head = "<tr><th>feature / observable</th>" + "".join(
        f"<th>{escape(t)} &middot; {escape(g)}</th>" for t in tests for g in regions
    )
    body = []
    for feature in features:
        cells = []
        for t in tests:
            for g in regions:
                if (t, g, feature) not in found:
                    cells.append("<td></td>")
                    continue
                n = found[(t, g, feature)]
                text = "no shift" if n is None else f"{n:,.0f}"
                if n is not None and limit is not None and n <= limit:
                    text = f"<b>{text}</b>"
                cells.append(f"<td class='num'>{text}</td>")
        body.append(f"<tr><td>{escape(feature)}</td>{''.join(cells)}</tr>")
    bold = (
        f"; in bold: at most control_region_events = {limit:,.0f}, so the check fails"
        if limit is not None
        else ""
    )
    return (
        '<p class="meta">events per sample at which each test would see the measured shift at '
        f"the check's level (fewer: more visible){bold}</p>"
        f"<table>{head}</tr>{''.join(body)}</table>"
    )


def _check_plots(spec: dict[str, Any], drawn: list[Plot]) -> str:
    """Per check with its own plots: loss-surface curves, an invariance check's compared
    samples per true class and its events_to_detect table."""
    parts = []
    for check in spec["checks"]:
        data = check.get("plot_data") or {}
        mine = [_figure(p) for p in drawn if p.check == check["name"]]
        invariance = data.get("invariance") or {}
        limit = (check.get("options") or {}).get("control_region_events")
        table = _events_to_detect(invariance.get("events_to_detect") or [], limit)
        if not mine and not table:
            continue
        parts.append(
            f"<h3>check <code>{escape(check['name'])}</code> ({escape(check['type'])})</h3>"
        )
        if invariance:
            if invariance["compare_to"] == "independent":
                what = (
                    f"the attacked half ({invariance['n_attacked']:,} events) against the "
                    f"independent nominal half ({invariance['n_reference']:,} events, split "
                    f"seed {invariance['split_seed']})"
                )
            else:
                what = "the attacked sample against the same events before the attack"
            parts.append(f'<p class="meta">compared, per true class: {escape(what)}</p>')
        parts.append(table)
        if mine:
            parts.append(f'<div class="plots">{"".join(mine)}</div>')
    return "\n".join(parts)


def _spec(spec: dict[str, Any], drawn: list[Plot]) -> str:
    counts = {v: sum(c["verdict"] == v for c in spec["checks"]) for v in ("passed", "failed")}
    parts = [
        f"<h2>{escape(display_path(spec['path']))}</h2>",
        f'<p class="meta">{counts["passed"]} passed, {counts["failed"]} failed &middot; '
        f"spec sha256 {_short_hash(spec)} &middot; device {escape(str(spec.get('device', '?')))}"
        "</p>",
        _nominal(spec.get("nominal")),
        _files(spec),
        _checks(spec["checks"]),
    ]
    for name, attack in spec["attacks"].items():
        parts.append(_attack(name, attack, drawn))
    parts.append(_check_plots(spec, drawn))
    roc = [_figure(p) for p in drawn if p.kind == "roc"]
    if roc:
        parts.append("<h3>ROC curves</h3>")
        parts.append(
            '<p class="meta">discriminant: the signal-class probability. Adversarial: the '
            "nominal sample after each attack, which moves correctly classified events until "
            "their decision flips (as for the fooling rate). Bands: 68% Clopper-Pearson "
            "intervals of the background efficiency from its event count</p>"
        )
        parts.append(f'<div class="plots">{"".join(roc)}</div>')
    return "\n".join(parts)


def _nominal(nominal: dict[str, Any] | None) -> str:
    """The tagger's nominal performance (nothing for records made without it)."""
    if not nominal:
        return ""
    warnings = "".join(
        f'<div class="problem">{escape(str(w))}</div>' for w in nominal.get("warnings") or ()
    )
    return f'<p class="nominal">{escape(nominal_line(nominal))}</p>{warnings}'


def _partial(partial: dict[str, Any] | None) -> str:
    """The banner of a run in which not every collected check ran."""
    if not partial:
        return ""
    items = "".join(f"<li><code>{escape(display_path(c))}</code></li>" for c in partial["not_run"])
    title = "interrupted run" if partial.get("interrupted") else "partial run"
    return (
        f'<div class="partial">{title}: {escape(partial_line(partial))}; this report holds '
        f"only the checks that ran<ul>{items}</ul></div>"
    )


def _pareto(group: dict[str, Any], folder: Path | None) -> str:
    """The AUC/resilience frontier of taggers evaluated on the same data."""
    rows = "".join(
        f"<tr><td>{escape(p['name'])}</td><td class='num'>{p['auc']:.4f}</td>"
        f"<td class='num'>{p['resilience']:.3g}%</td><td>"
        + (
            "on the front"
            if p["on_front"]
            else "dominated by " + escape(", ".join(p["dominated_by"]))
        )
        + "</td></tr>"
        for p in sorted(group["points"], key=lambda p: -p["auc"])
    )
    image = ""
    if group.get("file") and folder is not None and (folder / group["file"]).is_file():
        data = base64.b64encode((folder / group["file"]).read_bytes()).decode()
        image = (
            f'<div class="plots"><figure><img src="data:image/png;base64,{data}" '
            'alt="AUC against resilience"></figure></div>'
        )
    return (
        "<h2>AUC / resilience Pareto frontier</h2><p>Taggers gated on the same nominal and "
        "alternative samples (arXiv:2509.19431): higher AUC and lower AUC change are better."
        f"</p>{image}<table><tr><th>tagger</th><th>AUC</th><th>resilience</th><th></th></tr>"
        f"{rows}</table>"
    )


def page(document: dict[str, Any], drawn: dict[str, list[Plot]], folder: Path | None = None) -> str:
    """The whole page."""
    summary = document["summary"]
    versions = ", ".join(
        f"{escape(name)} {escape(version)}"
        for name, version in document["versions"].items()
        if version and name != "pytest-robustcheck"
    )
    partial = document.get("partial")
    shown = [p for p in document["problems"] if not (partial and p.startswith("partial run: "))]
    problems = "".join(f'<div class="problem">{escape(p)}</div>' for p in shown)
    specs = "\n".join(_spec(spec, drawn.get(spec["path"], [])) for spec in document["specs"])
    specs += "".join(_pareto(group, folder) for group in document.get("pareto") or [])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>robustcheck report</title><style>{CSS}</style></head><body>
<h1>robustcheck report</h1>
<p class="totals">{_verdict("passed")} {summary["passed"]} &nbsp; {_verdict("failed")}
{summary["failed"]} &nbsp; {_verdict("error")} {summary["error"]}</p>
<p class="meta">{escape(document["created"])} &middot; <code>{escape(document["command"])}</code>
<br>{versions} &middot; Python {escape(document["python"])}
&middot; {escape(document["platform"])}</p>
{_partial(partial)}
{problems}
{specs}
</body></html>
"""


def write(document: dict[str, Any], drawn: dict[str, list[Plot]], folder: Path) -> Path:
    from robustcheck.atomic import write_text

    return write_text(folder / "report.html", page(document, drawn, folder))
