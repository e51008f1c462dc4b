"""What the plots and report.json need from a SpecRun: histograms, scans, ROC curves, hashes.

Read from the attacks the checks already computed (``SpecRun.attacks_computed``); nothing
here runs an attack. Everything returned holds only JSON types.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustcheck import registry
from robustcheck.digest import external_data_files, file_digest
from robustcheck.invariance_stats import measure, real_entries
from robustcheck.report.records import clean
from robustcheck.spec import is_import_path
from robustcheck.stats import auc, clopper_pearson, roc_curve

if TYPE_CHECKING:
    from robustcheck.core import Adversaries, SpecRun
    from robustcheck.spec import CheckSpec

HISTOGRAM_BINS = 40
ROC_POINTS = 400


def _file(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_digest(path), "bytes": path.stat().st_size}


class SpecReportData:
    """Report data of one SpecRun, each part computed once."""

    def __init__(self, run: SpecRun) -> None:
        self.run = run
        self._files: dict[str, Any] | None = None
        self._spec: dict[str, Any] | None = None
        self._attacks: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []  # parts of the report data that failed, each once

    def spec_info(self, evaluate: bool = True) -> dict[str, Any]:
        """Spec, model and data files with their hashes; with ``evaluate`` also the event
        counts and the nominal and alternative ROC curves (which load the model and data)."""
        if self._files is None:
            spec = self.run.spec
            model: dict[str, Any]
            if is_import_path(spec.model.path):
                model = {"import": spec.model.path}
            else:
                model = _file(spec.base_dir / spec.model.path)
                extra = external_data_files(spec.base_dir / spec.model.path)
                if extra:  # an ONNX model's weights beside it (torch's default exporter)
                    model["external_data"] = [_file(file) for file in extra]
            if spec.model.weights:
                model["weights"] = _file(spec.base_dir / spec.model.weights)
            self._files = clean(
                {
                    "path": str(spec.path),
                    "sha256": file_digest(spec.path),
                    "model": model,
                    "data": {name: _file(table.path) for name, table in spec.data.items()},
                    "signal_class": spec.model.signal_class,
                    "units": {
                        name: {f: e.unit for f, e in entries.items() if e.unit}
                        for name, entries in spec.envelope.items()
                        if any(e.unit for e in entries.values())
                    },
                }
            )
        if not evaluate:
            return self._files
        if self._spec is None:
            run = self.run
            info = {**self._files, "device": str(run.device)}
            info["model"] = {**info["model"], "backend": getattr(run.tagger, "backend", None)}
            info["model"]["compiled"] = bool(getattr(run.tagger, "compiled", False))
            info["data"] = {
                name: {**entry, "n_events": run.n_events(name)}
                for name, entry in info["data"].items()
            }
            roc = {}
            for name in run.spec.data:
                curve = self._roc(name, run.log_probs(name))
                if curve is not None:
                    roc[name] = curve
            self._spec = clean({**info, "roc": roc})
        return self._spec

    def attack(self, name: str) -> dict[str, Any] | None:
        """One attack's figures, histograms, scan and ROC, or None when it was not computed."""
        if name not in self._attacks:
            main = self._main_outcome(name)
            if main is None:
                return None
            spec = self.run.spec.attacks[name]
            movable = {
                input_name: env.movable.numpy()
                for input_name, env in self.run.envelope.inputs.items()
            }
            self._attacks[name] = clean(
                {
                    "name": name,
                    "method": spec.method,
                    "options": {k: v for k, v in spec.options.items() if v is not None},
                    "description": main.description,
                    "epsilon": main.epsilon,
                    "seed": main.seed if main.uses_seed else None,
                    "seconds": main.seconds,
                    "n_events": main.n_events,
                    "n_correct": int(main.correct.sum()),
                    "n_fooled": int(main.fooled.sum()),
                    "histograms_note": main.kept_note(),
                    "histograms": histograms(
                        main, movable, self._bins(name), self._kept_labels(main), self._units()
                    )
                    if name in plotted_attacks(self.run)
                    else [],
                    "discriminant": self._part(name, "discriminant", self._discriminant, main),
                    "pulls": self._part(
                        name, "pulls", pull_data, main, self.run.envelope.inputs, self._units()
                    )
                    if name in plotted_attacks(self.run)
                    else [],
                    "scan": self._scan(name),
                    "roc": self._roc("nominal", main.log_probs),
                    "radius": radius_data(main),
                }
            )
        return self._attacks[name]

    def _part(self, attack: str, what: str, compute: Any, *args: Any) -> Any:
        """One optional part of an attack's data; a failure costs only that part (None) and
        becomes a problem line."""
        try:
            return compute(*args)
        except Exception as exc:
            problem = (
                f"report data ({what}) of attack {attack} in {self.run.spec.path}: "
                f"{type(exc).__name__}: {exc}"
            )
            if problem not in self.problems:
                self.problems.append(problem)
            return None

    def _units(self) -> dict[tuple[str, str], str]:
        """(input, feature) -> the unit the envelope gives it."""
        return {
            (name, feature): env.unit(column)
            for name, env in self.run.envelope.inputs.items()
            for column, feature in enumerate(env.features)
            if env.unit(column)
        }

    def _kept_labels(self, adv: Adversaries) -> np.ndarray | None:
        """True classes of the events the attack holds in memory (None if they do not match)."""
        labels = self.run.inputs("nominal")[1].numpy()
        first = next(iter(adv.real.values()), None)
        return labels if first is not None and len(first) == len(labels) else None

    def _discriminant(self, adv: Adversaries) -> dict[str, Any]:
        """Signal-score histograms per true class: nominal, attacked and alternative samples."""
        run = self.run
        samples = {"nominal": ("nominal", run.log_probs("nominal"))}
        samples["attacked"] = ("nominal", adv.log_probs)
        if "alternative" in run.spec.data:
            samples["alternative"] = ("alternative", run.log_probs("alternative"))
        return discriminant_histograms(
            {
                label: (
                    run.discriminant(log_probs),
                    run.labels(sample).numpy(),
                    run.weights(sample),
                )
                for label, (sample, log_probs) in samples.items()
            },
            run.spec.model.signal_class,
        )

    def _outcomes(self, name: str) -> list[tuple[tuple[object, ...], Adversaries]]:
        return [(key, adv) for key, adv in self.run.attacks_computed().items() if key[0] == name]

    def _main_outcome(self, name: str) -> Adversaries | None:
        """The attack at its own epsilon; the argmax decision and early stop preferred."""
        default = (self.run.spec.model.signal_class, None)
        found = [(key, adv) for key, adv in self._outcomes(name) if key[2] is None]
        found.sort(key=lambda item: (item[0][1] != default, _full(item[0])))
        return found[0][1] if found else None

    def _bins(self, attack: str) -> int:
        """The chi-squared bins of the first plotted check of the attack that sets them."""
        for check in self.run.spec.checks:
            if (
                _plots_attack(check)
                and check.options.get("attack") == attack
                and "bins" in check.options
            ):
                return int(check.options.get("bins") or 20)
        return 20

    def _scan(self, name: str) -> list[dict[str, Any]]:
        """Fooling rate against epsilon, from the scan points the checks computed."""
        epsilons = self.run.spec.attacks[name].options.get("scan") or ()
        if not epsilons:
            return []
        default = (self.run.spec.model.signal_class, None)
        points: dict[float, Adversaries] = {}
        for key, adv in self._outcomes(name):
            if key[1] == default and not _full(key):
                points.setdefault(float(adv.epsilon), adv)
        rows = []
        for epsilon in sorted({float(e) for e in epsilons}):
            adv = points.get(epsilon)
            if adv is None:
                continue
            n, k = int(adv.correct.sum()), int(adv.fooled.sum())
            low, high = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
            rows.append(
                {
                    "epsilon": epsilon,
                    "fooling_rate": k / n if n else None,
                    "ci_low": low,
                    "ci_high": high,
                    "n_events": n,
                    "n_fooled": k,
                }
            )
        return rows

    def _roc(self, sample: str, log_probs: Any) -> dict[str, Any] | None:
        """ROC of the signal-class probability (weighted when the sample has weights)."""
        labels = self.run.labels(sample).numpy() == self.run.spec.model.signal_class
        if labels.all() or not labels.any():
            return None
        scores = log_probs[:, self.run.spec.model.signal_class].double().exp().numpy()
        weights = self.run.weights(sample) if hasattr(self.run, "weights") else None
        fpr, tpr, _ = roc_curve(labels.astype(np.int64), scores, weights)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
        n_signal = effective_events(labels, weights)
        n_background = effective_events(~labels, weights)
        fpr_low, fpr_high = binomial_band(fpr[keep], n_background)
        tpr_low, tpr_high = binomial_band(tpr[keep], n_signal)
        return {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "auc": auc(labels.astype(np.int64), scores, weights),
            "n_events": int(len(labels)),
            "n_signal": n_signal,
            "n_background": n_background,
            "fpr_low": fpr_low.tolist(),
            "fpr_high": fpr_high.tolist(),
            "tpr_low": tpr_low.tolist(),
            "tpr_high": tpr_high.tolist(),
            "band": ROC_BAND,
        }


ROC_BAND = (
    "68.3% Clopper-Pearson intervals of the signal and background efficiencies from their "
    "event counts (effective counts (sum w)^2 / sum w^2 for a weighted sample)"
)
DISCRIMINANT_BINS = 25
PULL_BINS = 30


def effective_events(selected: np.ndarray, weights: np.ndarray | None) -> float:
    """Events selected, or their effective number (sum w)^2 / sum w^2 with weights."""
    if weights is None:
        return float(selected.sum())
    w = np.asarray(weights, dtype=float)[selected]
    square = float((w * w).sum())
    return float(w.sum()) ** 2 / square if square > 0 else 0.0


def binomial_band(
    efficiency: np.ndarray, n: float, confidence: float = 0.6827
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of each efficiency measured on ``n`` (effective) events."""
    from scipy.stats import beta

    eff = np.clip(np.asarray(efficiency, dtype=float), 0.0, 1.0)
    if n <= 0:
        return eff.copy(), eff.copy()
    k = eff * n
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)


def _counts(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Bin contents and their statistical errors (sqrt of the sum of squared weights)."""
    if weights is None:
        counts = np.histogram(values, edges)[0].astype(float)
        return {"counts": counts.tolist(), "errors": np.sqrt(counts).tolist()}
    counts = np.histogram(values, edges, weights=weights)[0]
    sumw2 = np.histogram(values, edges, weights=weights * weights)[0]
    return {"counts": counts.tolist(), "errors": np.sqrt(sumw2).tolist()}


def discriminant_histograms(
    samples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]], signal_class: int
) -> dict[str, Any]:
    """Per sample (nominal, attacked, alternative) and true class, the histogram of the
    signal-class probability with its statistical errors (weighted when the sample is)."""
    edges = np.linspace(0.0, 1.0, DISCRIMINANT_BINS + 1)
    out: dict[str, Any] = {"edges": edges.tolist(), "signal_class": signal_class, "samples": {}}
    for label, (scores, labels, weights) in samples.items():
        classes = {}
        for c in np.unique(labels):
            chosen = labels == c
            w = None if weights is None else np.asarray(weights, dtype=float)[chosen]
            classes[str(int(c))] = {
                **_counts(np.clip(scores[chosen], 0.0, 1.0), edges, w),
                "n_events": int(chosen.sum()),
            }
        out["samples"][label] = {"classes": classes, "weighted": weights is not None}
    return out


def pull_data(
    adv: Adversaries, envelopes: dict[str, Any], units: dict[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Per movable feature, the histogram of the fooled events' shifts in sigma (entries the
    attack moved; padding and placeholders left out), with their mean and RMS."""
    from robustcheck.core import sigma_rows  # torch: imported when a report is written

    fooled = adv.fooled.numpy()
    if adv.kept is not None:
        fooled = fooled[adv.kept]
    rows = np.flatnonzero(fooled)
    out: list[dict[str, Any]] = []
    if not len(rows):
        return out
    index = torch_rows(rows)
    for name, features in adv.features.items():
        if name not in envelopes:
            continue
        movable = envelopes[name].movable.numpy()
        x0, x1 = adv.nominal[name][index].double(), adv.adversarial[name][index].double()
        sigma = sigma_rows(adv.sigma, name, index).double()
        real = adv.real[name][index].reshape(-1)
        shift = (x1 - x0).reshape(-1, len(features))[real].numpy()
        scale = sigma.expand_as(x0).reshape(-1, len(features))[real].numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            pulls = np.where(scale > 0, shift / scale, 0.0)
        for column in np.flatnonzero(movable):
            values = pulls[:, column]
            moved = values[values != 0]
            top = max(float(adv.epsilon), float(np.abs(moved).max(initial=0.0))) * 1.05 or 1.0
            edges = np.linspace(-top, top, PULL_BINS + 1)
            out.append(
                {
                    "input": name,
                    "feature": features[column],
                    "unit": units.get((name, features[column])),
                    "edges": edges.tolist(),
                    **_counts(moved, edges),
                    "n_events": len(rows),
                    "n_entries": len(values),
                    "n_moved": len(moved),
                    "mean": float(moved.mean()) if len(moved) else 0.0,
                    "rms": float(np.sqrt((moved * moved).mean())) if len(moved) else 0.0,
                    "epsilon": float(adv.epsilon),
                }
            )
    return out


def torch_rows(rows: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))


RADIUS_BINS = 30
CURVE_POINTS = 81


def radius_data(adv: Adversaries) -> dict[str, Any] | None:
    """A min_epsilon attack's radii: their histogram up to max_epsilon, the events censored
    there, and the fooling rate vs epsilon curve (radius <= epsilon) with Clopper-Pearson
    intervals; None for an attack that records no radius."""
    from robustcheck.attacks.min_epsilon import RADIUS, event_radii, fooled_within

    if RADIUS not in adv.per_event:
        return None
    radii = event_radii(adv)
    n, top = len(radii), float(adv.epsilon)
    if n == 0:
        return None
    finite = radii[np.isfinite(radii)]
    edges = np.linspace(0.0, top, RADIUS_BINS + 1)
    curve = []
    for epsilon in np.linspace(0.0, top, CURVE_POINTS):
        k = fooled_within(radii, float(epsilon))
        low, high = clopper_pearson(k, n)
        curve.append(
            {
                "epsilon": float(epsilon),
                "fooling_rate": k / n,
                "ci_low": low,
                "ci_high": high,
                "n_fooled": k,
            }
        )
    return {
        "max_epsilon": top,
        "n_events": n,
        "n_censored": int(n - len(finite)),
        "edges": edges.tolist(),
        "counts": np.histogram(finite, edges)[0].tolist(),
        "curve": curve,
    }


def _full(key: tuple[object, ...]) -> bool:
    """Whether a cached attack attacked every event with its whole budget (4th key part)."""
    return len(key) > 3 and key[3] is True


def entry_labels(adv: Adversaries, name: str, labels: np.ndarray) -> np.ndarray:
    """The true class of every real entry of an input (an event's label on each of its
    constituents), in the order of ``real_entries``."""
    real = adv.real[name].numpy()
    shape = (len(labels),) + (1,) * (real.ndim - 1)
    return np.broadcast_to(labels.reshape(shape), real.shape).reshape(-1)[real.reshape(-1)]


def histograms(
    adv: Adversaries,
    movable: dict[str, np.ndarray],
    bins: int,
    labels: np.ndarray | None = None,
    units: dict[tuple[str, str], str] | None = None,
) -> list[dict]:
    """Nominal and adversarial histograms of every movable feature, with KS and chi2; with
    ``labels`` also per true class (``classes``), with statistical errors."""
    stats = iter(measure(adv, movable, bins).features)  # same order as the loops below
    units = units or {}
    out = []
    for name, features in adv.features.items():
        nominal, perturbed = real_entries(adv, name)
        classes = entry_labels(adv, name, labels) if labels is not None else None
        for col in np.flatnonzero(movable[name]):
            feature = features[col]
            a, b = nominal[:, col], perturbed[:, col]
            low = float(min(a.min(), b.min())) if len(a) else 0.0
            high = float(max(a.max(), b.max())) if len(a) else 1.0
            if not high > low:
                low, high = low - 0.5, high + 0.5
            edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
            figures = next(stats, None)
            out.append(
                {
                    "input": name,
                    "feature": feature,
                    "edges": edges.tolist(),
                    "nominal": np.histogram(a, edges)[0].tolist(),
                    "adversarial": np.histogram(b, edges)[0].tolist(),
                    "n_entries": int(len(a)),
                    "ks_statistic": figures.ks_statistic if figures else None,
                    "ks_pvalue": figures.ks_pvalue if figures else None,
                    "chi2_pvalue": figures.chi2_pvalue if figures else None,
                    "chi2_bins": bins,
                    "unit": units.get((name, feature)),
                    "classes": None
                    if classes is None
                    else {
                        str(int(c)): {
                            "nominal": _counts(a[classes == c], edges),
                            "adversarial": _counts(b[classes == c], edges),
                        }
                        for c in np.unique(classes)
                    },
                }
            )
    return out


def _plots_attack(check: CheckSpec) -> bool:
    """Whether the check's type declares that the report plots its attack."""
    declared = registry.checks().get(check.type)
    return declared is not None and declared.plots_attack


def plotted_attacks(run: SpecRun) -> list[str]:
    """Attacks named by a check whose type the report plots (fooling rate, invariance)."""
    names = [
        check.options.get("attack")
        for check in run.spec.checks
        if _plots_attack(check) and check.options.get("attack")
    ]
    return list(dict.fromkeys(names))


def add_report_data(record: dict[str, Any], data: SpecReportData, check: CheckSpec) -> None:
    """Add the spec's files and curves, and the check's attack, to a check record.

    A failure here is kept in ``record["problems"]``: the report must not fail the check.
    """
    problems = []
    ran = record["verdict"] != "error"
    try:
        record["spec_info"] = data.spec_info(evaluate=ran)
    except Exception as exc:
        problems.append(f"report data of {record['spec']}: {type(exc).__name__}: {exc}")
    attack = check.options.get("attack")
    if ran and attack:
        try:
            figures = data.attack(attack)
            if figures is not None:
                record["attacks"] = {attack: figures}
        except Exception as exc:
            problems.append(
                f"report data of attack {attack} in {record['spec']}: {type(exc).__name__}: {exc}"
            )
        problems += [p for p in data.problems if p not in problems]
    if ran:
        try:
            extra = check_plot_data(data.run, check, record.get("figures") or {})
            if extra is not None:
                record["plot_data"] = clean(extra)
        except Exception as exc:
            problems.append(
                f"report data of check {record['name']} in {record['spec']}: "
                f"{type(exc).__name__}: {exc}"
            )
    record["problems"] = problems


def check_plot_data(
    run: SpecRun, check: CheckSpec, figures: dict[str, Any]
) -> dict[str, Any] | None:
    """What a check's own plots need: a loss_surface check's curves, an invariance check's
    compared samples per true class and its events_to_detect table; None for other checks."""
    from robustcheck.report.extras import recall

    if check.type == "loss_surface":
        surface = recall(run, "loss_surface", check.index)
        return None if surface is None else {"loss_surface": surface}
    if check.type == "invariance":
        return {
            "invariance": {
                **invariance_histograms(run, check),
                "events_to_detect": events_to_detect_table(figures),
            }
        }
    return None


def events_to_detect_table(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The invariance check's ``events_to_detect/KIND/REGION/FEATURE`` figures as rows
    (None: the test sees no shift at any size)."""
    rows = []
    for key, value in figures.items():
        parts = key.split("/", 3)
        if len(parts) != 4 or parts[0] != "events_to_detect":
            continue
        _, kind, region, feature = parts
        number = float(value) if isinstance(value, (int, float)) else None
        rows.append(
            {
                "test": kind,
                "region": region,
                "feature": feature,
                "events_to_detect": number if number is not None and np.isfinite(number) else None,
            }
        )
    return rows


def invariance_histograms(run: SpecRun, check: CheckSpec) -> dict[str, Any]:
    """Per true class, the histograms an invariance check compares: the reference (the
    independent nominal half, or the same events before the attack) against the attacked
    events, for every movable feature and declared observable, with statistical errors.

    The regions and tested inputs are the check's own (its ``regions`` and ``tested``),
    so the report shows exactly the samples the check tested.
    """
    from robustcheck.checks.invariance import OBSERVABLES, Invariance
    from robustcheck.invariance_stats import entries

    probe = Invariance(check, run)
    adv = run.adversaries(check.options["attack"])
    independent = check.options.get("compare_to") == "independent"
    regions, _ = probe.regions(adv, independent)
    whole = regions[0]
    movable = {name: env.movable.numpy() for name, env in run.envelope.inputs.items()}
    units = SpecReportData(run)._units()
    nominal, adversarial, real, features, movable = probe.tested(adv, movable)
    labels = run.inputs("nominal")[1].numpy()
    if len(labels) != len(next(iter(adv.real.values()))):
        labels = np.zeros(len(next(iter(adv.real.values()))), dtype=np.int64)
    reference_all = entries(nominal, real, features, whole.reference)
    attacked_all = entries(adversarial, real, features, whole.attacked)
    per_class = {
        int(c): (
            entries(nominal, real, features, whole.reference[labels[whole.reference] == c]),
            entries(adversarial, real, features, whole.attacked[labels[whole.attacked] == c]),
        )
        for c in np.unique(labels)
    }
    out = []
    for name, names in features.items():
        for column in np.flatnonzero(movable.get(name, np.ones(len(names), dtype=bool))):
            a, b = reference_all[name][:, column], attacked_all[name][:, column]
            low = float(min(a.min(initial=np.inf), b.min(initial=np.inf)))
            high = float(max(a.max(initial=-np.inf), b.max(initial=-np.inf)))
            if not np.isfinite(low) or not high > low:
                low, high = (0.0, 1.0) if not np.isfinite(low) else (low - 0.5, high + 0.5)
            edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
            out.append(
                {
                    "input": "observables" if name == OBSERVABLES else name,
                    "feature": names[column],
                    "observable": name == OBSERVABLES,
                    "unit": units.get((name, names[column])),
                    "edges": edges.tolist(),
                    "classes": {
                        str(c): {
                            "reference": _counts(ref[name][:, column], edges),
                            "attacked": _counts(att[name][:, column], edges),
                        }
                        for c, (ref, att) in per_class.items()
                    },
                }
            )
    return {
        "attack": check.options["attack"],
        "compare_to": "independent" if independent else "same_events",
        "split_seed": int(check.options["split_seed"]) if independent else None,
        "n_reference": len(whole.reference),
        "n_attacked": len(whole.attacked),
        "histograms": out,
    }
