"""The report's plots, drawn with matplotlib's object API on the Agg canvas, in mplhep's
HEP style with its ``histplot``.

No pyplot and no global backend switch, so a report written inside a pytest session does not
disturb the user's own matplotlib state. matplotlib and mplhep come with the ``report`` extra;
without mplhep the plots are drawn with matplotlib alone and the report says so
(:func:`style_problem`). Neither is imported until a plot is drawn.
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
CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
EXTRA = 'pip install "pytest-robustcheck[report]"'
_STYLE = {
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}


def unavailable() -> str | None:
    """Why plots cannot be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed: {EXTRA}"
    return None


def _mplhep() -> Any | None:
    """mplhep, or None when it is not installed (or fails to import)."""
    try:
        import mplhep
    except Exception:
        return None
    return mplhep


def style_problem() -> str | None:
    """The report's problem line when mplhep is missing (plots then drawn without it)."""
    if _mplhep() is None:
        return f"mplhep is not installed: plots drawn without the HEP style and histplot; {EXTRA}"
    return None


def axis_label(name: str, unit: str | None) -> str:
    """``jet_pt [GeV]``, or the bare name without a unit."""
    return f"{name} [{unit}]" if unit else name


def class_label(c: str | int, signal_class: int | None = None) -> str:
    """``class 1 (signal)``."""
    signal = signal_class is not None and str(c) == str(signal_class)
    return f"class {c}" + (" (signal)" if signal else "")


def _histplot(
    axes: Any,
    counts: Any,
    edges: Any,
    errors: Any,
    *,
    label: str | None,
    color: str,
    linestyle: str = "-",
    histtype: str = "step",
) -> None:
    """One histogram with statistical error bars: mplhep's histplot, or plain matplotlib."""
    import numpy as np

    counts, edges = np.asarray(counts, dtype=float), np.asarray(edges, dtype=float)
    errors = np.asarray(errors, dtype=float)
    hep = _mplhep()
    if hep is not None:
        extra = {"linestyle": linestyle} if histtype == "step" else {"markersize": 3}
        hep.histplot(
            counts,
            edges,
            yerr=errors,
            ax=axes,
            label=label,
            color=color,
            histtype=histtype,
            flow=None,
            **extra,
        )
        return
    centers = 0.5 * (edges[1:] + edges[:-1])
    if histtype == "step":
        axes.stairs(counts, edges, color=color, linestyle=linestyle, label=label)
        axes.errorbar(centers, counts, yerr=errors, fmt="none", ecolor=color, elinewidth=0.8)
    else:
        axes.errorbar(centers, counts, yerr=errors, fmt="o", color=color, markersize=3, label=label)


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    hep = _mplhep()
    style: dict[str, Any] = dict(hep.style.ROOT) if hep is not None else {}
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


def _ratio_panel(
    axes: Any,
    edges: Any,
    pairs: Sequence[tuple[Any, Any, Any, Any, str]],
    label: str,
) -> None:
    """Ratio (second / first) per pair of (first, first errors, second, second errors,
    color): the first's relative statistical error as a band around 1, the second's on the
    points (the data/simulation convention)."""
    import numpy as np

    edges = np.asarray(edges, dtype=float)
    centers = 0.5 * (edges[1:] + edges[:-1])
    axes.axhline(1.0, color=NOMINAL_COLOR, linewidth=0.8)
    spread = 0.02
    for first, first_err, second, second_err, color in pairs:
        first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
        first_err, second_err = np.asarray(first_err, float), np.asarray(second_err, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            band = np.where(first > 0, first_err / first, np.nan)
            ratio = np.where(first > 0, second / first, np.nan)
            error = np.where(first > 0, second_err / first, np.nan)
        axes.stairs(1 + band, edges, baseline=1 - band, fill=True, color=color, alpha=0.15)
        axes.errorbar(centers, ratio, yerr=error, fmt="o", color=color, markersize=2.5)
        finite = np.abs(ratio[np.isfinite(ratio)] - 1.0)
        if finite.size:
            spread = max(spread, float(np.percentile(finite, 95)))
    spread = min(spread * 1.3, 1.0)
    axes.set_ylim(1 - spread, 1 + spread)
    axes.set_ylabel(label)


def _counts_of(entry: dict[str, Any]) -> tuple[Any, Any]:
    """(counts, errors) of a ``{"counts", "errors"}`` entry."""
    return entry["counts"], entry["errors"]


def class_comparison(
    data: dict[str, Any],
    keys: tuple[str, str],
    labels: tuple[str, str],
    title: str,
    signal_class: int | None = None,
    stats: str | None = None,
    ratio_label: str = "attacked / nominal",
) -> bytes:
    """Two samples of one feature per true class (``data["classes"][c][key]`` holds counts
    and errors), with statistical error bars and the ratio panel with its errors."""
    import numpy as np

    edges = np.asarray(data["edges"], dtype=float)
    classes = data["classes"]
    for c, entry in classes.items():
        for key in keys:
            if len(entry[key]["counts"]) + 1 != len(edges):
                raise ValueError(
                    f"{len(edges)} bin edges for {len(entry[key]['counts'])} bin contents "
                    f"({key}, class {c})"
                )
    with _style():
        figure = _figure(height=4.4)
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        pairs = []
        tallest = 1.0
        for number, (c, entry) in enumerate(classes.items()):
            color = CLASS_COLORS[number % len(CLASS_COLORS)]
            first, first_err = _counts_of(entry[keys[0]])
            second, second_err = _counts_of(entry[keys[1]])
            name = class_label(c, signal_class)
            _histplot(top, first, edges, first_err, label=f"{name}: {labels[0]}", color=color)
            _histplot(
                top,
                second,
                edges,
                second_err,
                label=f"{name}: {labels[1]}",
                color=color,
                histtype="errorbar",
            )
            pairs.append((first, first_err, second, second_err, color))
            tallest = max(
                tallest, float(np.max(first, initial=0)), float(np.max(second, initial=0))
            )
        if stats:
            top.plot([], [], " ", label=stats)
        top.set_ylabel("entries / bin")
        top.set_ylim(0, tallest * 1.45)
        top.legend(loc="upper right", fontsize=7)
        top.set_title(title, loc="left")
        _ratio_panel(bottom, edges, pairs, ratio_label)
        bottom.set_xlabel(axis_label(data["feature"], data.get("unit")))
        bottom.set_xlim(edges[0], edges[-1])
        return _png(figure)


def _binned(edges: Sequence[float], *contents: Sequence[float]) -> tuple[Any, ...]:
    """Bin edges and bin contents as float arrays; a ValueError when the numbers disagree."""
    import numpy as np

    arrays = [np.asarray(edges, dtype=float), *(np.asarray(c, dtype=float) for c in contents)]
    if any(len(a) + 1 != len(arrays[0]) for a in arrays[1:]):
        sizes = " and ".join(str(len(a)) for a in arrays[1:])
        raise ValueError(f"{len(arrays[0])} bin edges for {sizes} bin contents")
    return tuple(arrays)


def histogram(data: dict[str, Any], attack: str, signal_class: int | None = None) -> bytes:
    """Nominal vs adversarial distribution of one feature, per true class when the data has
    them, with statistical error bars and the ratio below."""
    import numpy as np

    edges, nominal, adversarial = _binned(data["edges"], data["nominal"], data["adversarial"])
    stats = (
        f"KS p = {_pvalue(data.get('ks_pvalue'))}, $\\chi^2$ p = {_pvalue(data.get('chi2_pvalue'))}"
    )
    classes = data.get("classes") or {
        "all": {
            "nominal": {"counts": nominal, "errors": np.sqrt(nominal)},
            "adversarial": {"counts": adversarial, "errors": np.sqrt(adversarial)},
        }
    }
    return class_comparison(
        {**data, "classes": classes},
        ("nominal", "adversarial"),
        ("nominal", f"attacked ({attack})"),
        f"{data['input']}: {axis_label(data['feature'], data.get('unit'))}",
        signal_class,
        stats,
    )


def discriminant(data: dict[str, Any], attack: str) -> bytes:
    """The signal-class probability per true class, for the nominal, attacked and
    alternative samples, each normalised to unit area, with statistical errors."""
    import numpy as np

    edges = np.asarray(data["edges"], dtype=float)
    widths = np.diff(edges)
    styles = {"nominal": ("-", "step"), "attacked": ("--", "step"), "alternative": (":", "step")}
    with _style():
        figure = _figure(height=4.2)
        axes = figure.subplots()
        top = 0.0
        for sample, entry in data["samples"].items():
            linestyle, histtype = styles.get(sample, ("-.", "step"))
            for number, (c, found) in enumerate(entry["classes"].items()):
                counts = np.asarray(found["counts"], dtype=float)
                errors = np.asarray(found["errors"], dtype=float)
                total = counts.sum()
                if total <= 0:
                    continue
                scale = 1.0 / (total * widths)
                name = class_label(c, data.get("signal_class"))
                sample_name = f"attacked ({attack})" if sample == "attacked" else sample
                _histplot(
                    axes,
                    counts * scale,
                    edges,
                    errors * scale,
                    label=f"{name}, {sample_name}",
                    color=CLASS_COLORS[number % len(CLASS_COLORS)],
                    linestyle=linestyle,
                    histtype=histtype,
                )
                top = max(top, float((counts * scale).max()))
        axes.set_yscale("log")
        axes.set_ylim(bottom=max(top, 1.0) * 1e-3, top=max(top, 1.0) * 8)
        axes.set_xlim(0, 1)
        axes.set_xlabel("signal-class probability (discriminant)")
        axes.set_ylabel("normalised to unit area")
        axes.set_title(f"discriminant: nominal, attacked ({attack}), alternative", loc="left")
        axes.legend(loc="upper center", fontsize=7, ncol=2)
        return _png(figure)


def pulls(data: dict[str, Any], attack: str) -> bytes:
    """The fooled events' shifts of one feature in sigma (the entries the attack moved)."""

    edges, counts = _binned(data["edges"], data["counts"])
    with _style():
        figure = _figure()
        axes = figure.subplots()
        _histplot(
            axes,
            counts,
            edges,
            data["errors"],
            label=f"{data['n_moved']:,} moved of {data['n_entries']:,} entries "
            f"({data['n_events']:,} fooled events)",
            color=ADVERSARIAL_COLOR,
        )
        axes.plot([], [], " ", label=f"mean {data['mean']:+.3g}, RMS {data['rms']:.3g}")
        for sign in (-1, 1):
            axes.axvline(
                sign * data["epsilon"],
                color=NOMINAL_COLOR,
                linestyle=":",
                label=rf"$\pm\epsilon$ = {data['epsilon']:g}" if sign > 0 else None,
            )
        axes.set_xlabel(f"shift of {data['feature']} [$\\sigma$]")
        axes.set_ylabel("entries / bin")
        axes.set_ylim(0, max(float(counts.max(initial=0)), 1.0) * 1.45)
        axes.set_title(f"fooled events' pulls, attack {attack}", loc="left")
        axes.legend(loc="upper left", fontsize=7)
        return _png(figure)


def loss_profiles(data: dict[str, Any], check: str, curves: int = 8) -> bytes:
    """A loss_surface check's mean loss against each feature's shift in sigma (the
    steepest ``curves`` features), the nominal value dashed."""
    import numpy as np

    offsets = np.asarray(data["offsets"], dtype=float)
    profiles = np.asarray(data["profiles"], dtype=float)
    if profiles.ndim != 2 or profiles.shape[1] != len(offsets):
        raise ValueError(f"{profiles.shape} profiles for {len(offsets)} offsets")
    order = np.argsort(profiles.max(axis=1) - data["nominal"])[::-1][:curves]
    with _style():
        figure = _figure()
        axes = figure.subplots()
        for number, k in enumerate(order):
            axes.plot(
                offsets,
                profiles[k],
                color=CLASS_COLORS[number % len(CLASS_COLORS)],
                linestyle=("-", "--")[number // len(CLASS_COLORS) % 2],
                label=data["features"][k],
            )
        axes.axhline(data["nominal"], color=NOMINAL_COLOR, linestyle=":", label="nominal")
        axes.set_xlabel(r"shift [$\sigma$]")
        axes.set_ylabel(f"mean {data.get('quantity') or 'loss'}")
        axes.set_title(f"loss surface: {check} ({data['n_events']:,} events)", loc="left")
        axes.legend(loc="best", fontsize=7)
        return _png(figure)


def loss_grid(data: dict[str, Any], check: str) -> bytes:
    """A loss_surface check's 2-D grid: the mean loss as two features move together."""
    import numpy as np

    offsets = np.asarray(data["offsets"], dtype=float)
    grid = np.asarray(data["grid"], dtype=float)
    if grid.shape != (len(offsets), len(offsets)):
        raise ValueError(f"a {grid.shape} grid for {len(offsets)} offsets")
    a, b = data["grid_features"]
    with _style():
        figure = _figure(width=5.4)
        axes = figure.subplots()
        mesh = axes.pcolormesh(offsets, offsets, grid.T, shading="nearest", cmap="viridis")
        colorbar = figure.colorbar(mesh, ax=axes)
        colorbar.set_label(f"mean {data.get('quantity') or 'loss'}")
        axes.plot([0], [0], "+", color="white", markersize=10)
        axes.set_xlabel(rf"{a} shift [$\sigma$]")
        axes.set_ylabel(rf"{b} shift [$\sigma$]")
        axes.set_title(f"loss surface grid: {check}", loc="left")
        return _png(figure)


def _rate_curve(rows: Sequence[dict[str, Any]]) -> tuple[Any, Any, Any, Any]:
    """Epsilon, fooling rate and its interval's ends of curve points, as float arrays."""
    import numpy as np

    return tuple(  # type: ignore[return-value]
        np.array([r[key] for r in rows], dtype=float)
        for key in ("epsilon", "fooling_rate", "ci_low", "ci_high")
    )


def scan(
    rows: Sequence[dict[str, Any]], attack: str, limit: float | None, epsilon: float | None = None
) -> bytes:
    """Fooling rate against epsilon with its Clopper-Pearson interval; ``limit`` is the
    fooling-rate checks' max, which holds at the attack's own ``epsilon``."""

    rows = [r for r in rows if r.get("fooling_rate") is not None]
    if not rows:
        raise ValueError("no scan point has a fooling rate")
    eps, rate, low, high = _rate_curve(rows)
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
        banded = False
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
            if curve.get("fpr_low") is not None and curve.get("fpr_high") is not None:
                low = np.asarray(curve["fpr_low"], dtype=float)[keep]
                high = np.asarray(curve["fpr_high"], dtype=float)[keep]
                with np.errstate(divide="ignore"):
                    upper = np.where(low > 0, 1.0 / low, np.nan)
                lower = 1.0 / np.maximum(high, fpr[keep])
                axes.fill_between(
                    tpr[keep], lower, np.fmin(upper, 1e9), color=color, alpha=0.2, linewidth=0
                )
                banded = True
        axes.set_yscale("log")
        axes.set_xlim(0, 1)
        axes.set_ylim(1, 10 ** math.ceil(math.log10(largest) + 0.3))
        axes.set_xlabel(r"signal efficiency $\varepsilon_S$")
        axes.set_ylabel(r"background rejection $1/\varepsilon_B$")
        if banded:
            axes.plot([], [], " ", label=r"bands: 68% Clopper-Pearson on $\varepsilon_B$")
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

    edges, counts = _binned(data["edges"], data["counts"])
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

    rows = data["curve"]
    if not rows:
        raise ValueError("the radius curve has no points")
    eps, rate, low, high = _rate_curve(rows)
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
