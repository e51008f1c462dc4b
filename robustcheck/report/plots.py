"""The report's plots, drawn with matplotlib's object API on the Agg canvas.

No pyplot and no global backend switch, so a report written inside a pytest session does not
disturb the user's own matplotlib state. mplhep's style is used when it is installed.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

NOMINAL_COLOR = "#1f1f1f"
ADVERSARIAL_COLOR = "#d62728"
SAMPLE_STYLES = {"nominal": (NOMINAL_COLOR, "-"), "alternative": ("#1f77b4", "-")}
ATTACK_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_STYLE = {
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
}


def unavailable() -> str | None:
    """Why plots cannot be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return 'matplotlib is not installed: pip install "pytest-robustcheck[report]"'
    return None


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    style: dict[str, Any] = {}
    try:
        import mplhep

        style = dict(mplhep.style.ROOT)
    except Exception:  # mplhep is optional
        style = {}
    with matplotlib.rc_context({**style, **_STYLE}):
        yield


def _figure(height: float = 4.0, width: float = 5.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _pvalue(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def histogram(data: dict[str, Any], attack: str) -> bytes:
    """Nominal vs adversarial distribution of one feature, with the ratio below."""
    import numpy as np

    edges = np.asarray(data["edges"], dtype=float)
    nominal = np.asarray(data["nominal"], dtype=float)
    adversarial = np.asarray(data["adversarial"], dtype=float)
    if not (len(edges) == len(nominal) + 1 == len(adversarial) + 1):
        raise ValueError(
            f"{len(edges)} bin edges for {len(nominal)} and {len(adversarial)} bin contents"
        )
    with _style():
        figure = _figure()
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        top.stairs(nominal, edges, color=NOMINAL_COLOR, linewidth=1.4, label="nominal")
        top.stairs(
            adversarial,
            edges,
            color=ADVERSARIAL_COLOR,
            linewidth=1.4,
            linestyle="--",
            label=f"adversarial ({attack})",
        )
        stats = (
            f"KS p = {_pvalue(data.get('ks_pvalue'))}, "
            f"$\\chi^2$ p = {_pvalue(data.get('chi2_pvalue'))}"
        )
        top.plot([], [], " ", label=stats)
        top.set_ylabel("entries / bin")
        top.set_ylim(0, max(nominal.max(initial=0), adversarial.max(initial=0)) * 1.35 or 1)
        top.legend(loc="upper right", fontsize=8)
        top.set_title(f"{data['input']}: {data['feature']}", fontsize=10, loc="left")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(nominal > 0, adversarial / nominal, np.nan)
        # no error bars: both samples hold the same events, so Poisson errors would mislead
        bottom.axhline(1.0, color=NOMINAL_COLOR, linewidth=0.8)
        bottom.stairs(ratio, edges, color=ADVERSARIAL_COLOR, linewidth=1.2, baseline=None)
        finite = ratio[np.isfinite(ratio)]
        spread = float(np.max(np.abs(finite - 1.0))) if finite.size else 0.1
        spread = min(max(spread * 1.15, 0.02), 1.0)
        bottom.set_ylim(1 - spread, 1 + spread)
        bottom.set_ylabel("adv. / nom.")
        bottom.set_xlabel(data["feature"])
        return _png(figure)


def scan(
    rows: Sequence[dict[str, Any]], attack: str, limit: float | None, epsilon: float | None = None
) -> bytes:
    """Fooling rate against epsilon with its Clopper-Pearson interval; ``limit`` is the
    fooling-rate checks' max, which holds at the attack's own ``epsilon``."""
    import numpy as np

    rows = [r for r in rows if r.get("fooling_rate") is not None]
    if not rows:
        raise ValueError("no scan point has a fooling rate")
    eps = np.array([r["epsilon"] for r in rows], dtype=float)
    rate = np.array([r["fooling_rate"] for r in rows], dtype=float)
    low = np.array([r["ci_low"] for r in rows], dtype=float)
    high = np.array([r["ci_high"] for r in rows], dtype=float)
    with _style():
        figure = _figure()
        axes = figure.subplots()
        axes.fill_between(
            eps, low, high, color=ADVERSARIAL_COLOR, alpha=0.2, linewidth=0, label="95% CL"
        )
        axes.plot(eps, rate, "o-", color=ADVERSARIAL_COLOR, markersize=4, label="fooling rate")
        if limit is not None:
            axes.axhline(
                limit, color=NOMINAL_COLOR, linestyle=":", label=f"fooling-rate check max {limit:g}"
            )
        if epsilon is not None:
            axes.axvline(
                epsilon,
                color="#7f7f7f",
                linestyle="--",
                linewidth=0.8,
                label=rf"attack's own $\epsilon$ = {epsilon:g}",
            )
        axes.set_xlabel(r"$\epsilon$ [$\sigma$]")
        axes.set_ylabel("fooling rate")
        axes.set_xlim(0, eps.max() * 1.05)
        axes.set_ylim(0, max(float(high.max()), limit or 0.0) * 1.15 or 1.0)
        axes.set_title(f"attack {attack}", fontsize=10, loc="left")
        axes.legend(loc="best", fontsize=8)
        return _png(figure)


def roc(curves: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """Background rejection against signal efficiency, one curve per sample."""
    import numpy as np

    if not curves:
        raise ValueError("no ROC curve")
    with _style():
        figure = _figure()
        axes = figure.subplots()
        largest = 1.0
        adversarial = 0
        for label, curve in curves:
            fpr = np.asarray(curve["fpr"], dtype=float)
            tpr = np.asarray(curve["tpr"], dtype=float)
            keep = fpr > 0
            if not keep.any():
                continue
            rejection = 1.0 / fpr[keep]
            largest = max(largest, float(rejection.max()))
            if label in SAMPLE_STYLES:
                color, style = SAMPLE_STYLES[label]
            else:
                color, style = ATTACK_COLORS[adversarial % len(ATTACK_COLORS)], "--"
                adversarial += 1
            axes.plot(
                tpr[keep],
                rejection,
                color=color,
                linestyle=style,
                linewidth=1.4,
                label=f"{label} (AUC {curve['auc']:.4f})",
            )
        axes.set_yscale("log")
        axes.set_xlim(0, 1)
        axes.set_ylim(1, 10 ** math.ceil(math.log10(largest) + 0.3))
        axes.set_xlabel(r"signal efficiency $\varepsilon_S$")
        axes.set_ylabel(r"background rejection $1/\varepsilon_B$")
        axes.legend(loc="lower left", fontsize=8)
        return _png(figure)


def pareto(points: Sequence[dict[str, Any]]) -> bytes:
    """AUC against resilience (percent AUC change between generators), front highlighted."""
    if len(points) < 2:
        raise ValueError("a Pareto plot needs two taggers or more")
    with _style():
        figure = _figure()
        axes = figure.subplots()
        front = sorted((p for p in points if p["on_front"]), key=lambda p: p["resilience"])
        if len(front) > 1:
            axes.plot(
                [p["resilience"] for p in front],
                [p["auc"] for p in front],
                color=ADVERSARIAL_COLOR,
                linewidth=1.0,
                zorder=1,
                label="Pareto front",
            )
        for p in points:
            color = ADVERSARIAL_COLOR if p["on_front"] else NOMINAL_COLOR
            axes.errorbar(
                p["resilience"],
                p["auc"],
                xerr=p.get("resilience_error") or 0.0,
                yerr=p.get("auc_error") or 0.0,
                fmt="o" if p["on_front"] else "s",
                color=color,
                markersize=5,
                capsize=2,
                zorder=2,
            )
            axes.annotate(
                p["name"],
                (p["resilience"], p["auc"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        axes.set_xlabel("resilience: AUC change between generators (%)")
        axes.set_ylabel("AUC (nominal sample)")
        axes.set_xlim(left=0)
        if len(front) > 1:
            axes.legend(loc="lower right")
        return _png(figure)


def radius_histogram(data: dict[str, Any], attack: str, minima: Sequence[float] = ()) -> bytes:
    """Distribution of a min_epsilon attack's robustness radii, the events not fooled up to
    max_epsilon counted in the legend; ``minima`` are the robust_radius checks' ``min``."""
    import numpy as np

    edges = np.asarray(data["edges"], dtype=float)
    counts = np.asarray(data["counts"], dtype=float)
    if len(edges) != len(counts) + 1:
        raise ValueError(f"{len(edges)} bin edges for {len(counts)} bin contents")
    with _style():
        figure = _figure()
        axes = figure.subplots()
        axes.stairs(counts, edges, color=ADVERSARIAL_COLOR, linewidth=1.4, fill=False)
        axes.plot(
            [],
            [],
            " ",
            label=f"{int(counts.sum()):,} fooled of {data['n_events']:,}; "
            f"{data['n_censored']:,} with radius > {data['max_epsilon']:g}",
        )
        for number, value in enumerate(dict.fromkeys(minima)):
            axes.axvline(
                value,
                color=NOMINAL_COLOR,
                linestyle=":",
                label="robust_radius min" if number == 0 else None,
            )
        axes.set_xlabel(r"robustness radius [$\sigma$]")
        axes.set_ylabel("events / bin")
        axes.set_xlim(0, edges[-1])
        axes.set_ylim(0, max(float(counts.max(initial=0)), 1.0) * 1.3)
        axes.set_title(f"attack {attack}", fontsize=10, loc="left")
        axes.legend(loc="upper left", fontsize=8)
        return _png(figure)


def radius_curve(
    data: dict[str, Any],
    attack: str,
    limits: Sequence[tuple[float, float]] = (),
    quantiles: Sequence[tuple[float, float]] = (),
) -> bytes:
    """Fooling rate vs epsilon from one min_epsilon run (share of events with radius <=
    epsilon) with its Clopper-Pearson band; ``limits`` are (epsilon, max) of the fooling_rate
    checks reading it, ``quantiles`` (min, quantile) of the robust_radius checks."""
    import numpy as np

    rows = data["curve"]
    if not rows:
        raise ValueError("the radius curve has no points")
    eps = np.array([r["epsilon"] for r in rows], dtype=float)
    rate = np.array([r["fooling_rate"] for r in rows], dtype=float)
    low = np.array([r["ci_low"] for r in rows], dtype=float)
    high = np.array([r["ci_high"] for r in rows], dtype=float)
    with _style():
        figure = _figure()
        axes = figure.subplots()
        axes.fill_between(
            eps,
            low,
            high,
            step="post",
            color=ADVERSARIAL_COLOR,
            alpha=0.2,
            linewidth=0,
            label="95% CL",
        )
        axes.step(eps, rate, where="post", color=ADVERSARIAL_COLOR, label="fooling rate")
        tops = [0.0]
        for number, (epsilon, limit) in enumerate(limits):
            tops.append(limit)
            axes.plot(
                [epsilon],
                [limit],
                "v",
                color=NOMINAL_COLOR,
                label="fooling_rate max at its epsilon" if number == 0 else None,
            )
        for number, (minimum, quantile) in enumerate(quantiles):
            tops.append(quantile)
            axes.plot(
                [0, minimum, minimum],
                [quantile, quantile, 0],
                color="#7f7f7f",
                linestyle="--",
                linewidth=0.9,
                label="robust_radius: quantile, min" if number == 0 else None,
            )
        axes.set_xlabel(r"$\epsilon$ [$\sigma$]")
        axes.set_ylabel(r"fooling rate (radius $\leq \epsilon$)")
        axes.set_xlim(0, eps.max())
        axes.set_ylim(0, max(float(high.max()), *tops) * 1.15 or 1.0)
        axes.set_title(f"attack {attack} (one min_epsilon run)", fontsize=10, loc="left")
        axes.legend(loc="upper left", fontsize=8)
        return _png(figure)
