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
                }
            )
        if not evaluate:
            return self._files
        if self._spec is None:
            run = self.run
            info = {**self._files, "device": str(run.device)}
            info["model"] = {**info["model"], "backend": getattr(run.tagger, "backend", None)}
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
                    "histograms": histograms(main, movable, self._bins(name))
                    if name in plotted_attacks(self.run)
                    else [],
                    "scan": self._scan(name),
                    "roc": self._roc("nominal", main.log_probs),
                    "radius": radius_data(main),
                }
            )
        return self._attacks[name]

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
        return {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "auc": auc(labels.astype(np.int64), scores, weights),
            "n_events": int(len(labels)),
        }


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


def histograms(adv: Adversaries, movable: dict[str, np.ndarray], bins: int) -> list[dict]:
    """Nominal and adversarial histograms of every movable feature, with KS and chi2."""
    stats = iter(measure(adv, movable, bins).features)  # same order as the loops below
    out = []
    for name, features in adv.features.items():
        nominal, perturbed = real_entries(adv, name)
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
    record["problems"] = problems
