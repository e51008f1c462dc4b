"""Check ``invariance``: the attacked sample's marginals and correlations match the nominal.

Per movable feature: two-sample KS p-value, binned chi-squared p-value (quantile bins of the
nominal sample, sparse bins merged) and Jensen-Shannon distance; per input: the largest change
of a Pearson correlation, the relative Frobenius norm of the change and a z test of each pair's
correlation. Padded particle entries are excluded.

``compare_to = "independent"`` (the default) splits the nominal sample in two halves with a
fixed seed (``split_seed``) and compares the attacked values of one half with the nominal
values of the other, untouched half, as data is compared with simulation in a control region:
the attack runs once on every event, and only the halves' roles differ. ``"same_events"``
compares the attacked sample with the same events before the attack (earlier versions): the
events the attack leaves alone are identical in both and the tests take the two samples as
independent, so its p-values are near 1 unless the attack moves many events. Every test runs
inclusively, per true class with ``by_class = true``, and in each region of ``regions`` (cuts
on the nominal discriminant, robustcheck.regions).

The p-value tests form one family: with ``correction = "holm"`` (the default) the p-values of
every movable feature of every input, KS and chi-squared together, are Holm-Bonferroni
adjusted, and a test fails when its adjusted p-value is below its threshold. So
``ks_min_pvalue`` and ``chi2_min_pvalue`` bound the false-alarm rate of the whole check (the
probability that an unchanged sample fails it), not of each test: with both at 0.01 the check
false-alarms at most 1% of the time (at most the larger threshold when they differ). With
``correction = "none"`` each p-value is held at its threshold on its own, and with 10 features
(20 tests) at 0.01 the check fails one unchanged sample in six (benchmarks/README.md). Holm and
Bonferroni agree on whether the check fails; Holm's step-down names more of the failing
features. The correlation z tests (``corr_min_pvalue``), of every region, join the same family.
The distances (JSD, correlation change) are not p-values and are held at their thresholds as
given; between independent halves they include both halves' sampling noise.

Detectability: for every test, ``events_to_detect`` is the number of events per sample in its
region at which that test on two independent samples, at the family's per-test level
(threshold / number of tests with holm, the threshold with none), sees the attack's shift in
about half of such samples (KS: at least half). The shift is the attack's displacement,
measured on the region's events before and after the attack, so an attack that moves nothing
has none (robustcheck.invariance_stats). With ``control_region_events = N`` the check fails
when the smallest is at most N.

Particle inputs (several entries per event, padding masked out): the entries of one event are
correlated, so every test of such an input is corrected with design effects D estimated from
the data, events as clusters (robustcheck.invariance_stats: Rao-Scott for chi-squared,
effective sizes n / D for KS, cluster-robust variances for the correlations), and the verdict
notes D per input; one entry per event is not corrected. ``events_to_detect`` counts events
through the same effective sizes: N events carry N * (entries per event) / D effective
entries, so the entries a test needs are multiplied by D (KS: its D; chi-squared: through the
corrected statistic; correlations: through the cluster-robust variance) and divided by the
entries per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robustcheck.checks.base import Check
from robustcheck.errors import ModelError, SpecError
from robustcheck.invariance_stats import (
    FeatureFigures as FeatureFigures,  # re-exported
)
from robustcheck.invariance_stats import (
    InvarianceFigures as InvarianceFigures,  # re-exported
)
from robustcheck.invariance_stats import (
    PairFigures,
    chi2_events_to_detect,
    compare,
    correlation_events_to_detect,
    entries,
    event_ids,
    ks_events_to_detect,
)
from robustcheck.invariance_stats import measure as measure  # re-exported
from robustcheck.invariance_stats import real_entries as real_entries  # re-exported
from robustcheck.regions import parse_region
from robustcheck.result import CheckResult
from robustcheck.stats import holm_adjust
from robustcheck.stream import KEEP_SEED

if TYPE_CHECKING:
    from robustcheck.core import Adversaries
    from robustcheck.regions import Region as CutRegion

CORRECTIONS = ("holm", "none")

OBSERVABLES = "[observables]"  # the pseudo-input the observables are tested as

# The p-value tests: kind -> (threshold option, name in messages, figures attribute).
PVALUE_KINDS = {
    "ks": ("ks_min_pvalue", "KS", "ks_pvalue"),
    "chi2": ("chi2_min_pvalue", "chi2", "chi2_pvalue"),
    "corr": ("corr_min_pvalue", "correlation", "pvalue"),
}


@dataclass
class PValueTests:
    """The p-value tests held against thresholds: per kind, the raw and the corrected p-values
    (leading axes, features) and the threshold. Leading axes are independent repetitions (the
    calibration study); the check has none."""

    correction: str
    thresholds: dict[str, float]
    raw: dict[str, np.ndarray]
    adjusted: dict[str, np.ndarray]

    @property
    def n_tests(self) -> int:
        return sum(p.shape[-1] for p in self.raw.values())

    def rejected(self, kind: str) -> np.ndarray:
        """Which tests of a kind fail: corrected p-value below the threshold."""
        return self.adjusted[kind] < self.thresholds[kind]

    def alarm(self) -> np.ndarray:
        """Whether any test fails, per repetition (a 0-d array for one check)."""
        shape = next(iter(self.raw.values())).shape[:-1] if self.raw else ()
        out = np.zeros(shape, dtype=bool)
        for kind in self.raw:
            out |= self.rejected(kind).any(axis=-1)
        return out


def pvalue_tests(
    pvalues: Mapping[str, np.ndarray], thresholds: Mapping[str, float | None], correction: str
) -> PValueTests:
    """Hold each kind's p-values (..., features) at its threshold after ``correction``.

    Kinds without a threshold take no part. ``holm``: Holm-Bonferroni over every test of every
    kind together (one family; its leading axes are separate families), so the probability
    that any test fails when no distribution changed is at most the largest threshold.
    ``none``: every p-value on its own, as it is.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    limits = {k: float(t) for k, t in thresholds.items() if t is not None and k in pvalues}
    raw = {k: np.asarray(pvalues[k], dtype=np.float64) for k in limits}
    if correction == "none" or not raw:
        return PValueTests(correction, limits, raw, dict(raw))
    kinds = list(raw)
    joint = holm_adjust(np.concatenate([raw[k] for k in kinds], axis=-1))
    cuts = np.cumsum([raw[k].shape[-1] for k in kinds])[:-1]
    parts = np.split(joint, cuts, axis=-1)
    return PValueTests(correction, limits, raw, dict(zip(kinds, parts, strict=True)))


@dataclass
class Region:
    """Where a family of tests runs: the positions (in the events held in memory) of the
    attacked and of the reference events, and how messages name it ("" inclusively)."""

    name: str
    attacked: np.ndarray
    reference: np.ndarray
    text: str = ""

    def label(self, what: str) -> str:
        return f"{what} in {self.name}" if self.name != "all" else what


@dataclass
class Test:
    """One p-value test of the check: its kind, region, what it names and its figures."""

    kind: str
    region: Region
    name: str  # feature, or "a-b" for a correlation pair
    figures: object  # FeatureFigures or PairFigures
    paired: object = None  # the same on the region's events before and after the attack
    entries_per_event: float = 1.0  # real entries per event of the paired sample

    @property
    def label(self) -> str:
        return self.region.label(self.name)

    @property
    def pvalue(self) -> float:
        return float(getattr(self.figures, PVALUE_KINDS[self.kind][2]))


@dataclass
class Measured:
    """Everything the check measured: per region, the invariance figures, and the tests."""

    regions: list[Region]
    figures: list[InvarianceFigures]
    tests: dict[str, list[Test]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def torch_ones(n: int) -> Any:
    """All events real (observables have one value per event)."""
    import torch

    return torch.ones(n, dtype=torch.bool)


class Invariance(Check):
    def evaluate(self) -> CheckResult:
        adv = self.run.adversaries(self.options["attack"])
        movable = {name: env.movable.numpy() for name, env in self.run.envelope.inputs.items()}
        o = self.options
        independent = o["compare_to"] == "independent"
        regions, skipped = self.regions(adv, independent)
        measured = self._measure(adv, movable, regions, independent)
        measured.skipped = skipped
        inclusive = measured.figures[0]
        tests = self._tests(measured)
        detect = self._events_to_detect(measured, tests)
        failures = self._failures(measured, tests, detect)
        fooled = adv.fooled.numpy() if adv.kept is None else adv.fooled.numpy()[adv.kept]
        all_events = regions[0]
        record: dict[str, float | int | str] = {
            "compare_to": str(o["compare_to"]),
            "n_entries": inclusive.n_entries,
            "n_events_attacked": len(all_events.attacked),
            "n_events_reference": len(all_events.reference),
            "n_fooled_attacked": int(fooled[all_events.attacked].sum()),
            "n_regions": len(regions),
            **self._correlation_figures(measured),
            **self._design_effect_figures(measured),
            **adv.attack_figures(),
            "epsilon": adv.epsilon,
        }
        if independent:
            record["split_seed"] = int(o["split_seed"])
        if any(f.features for f in measured.figures):
            record.update(self._pvalue_figures(measured, tests))
            worst = max(
                (
                    (r, f)
                    for r, figs in zip(regions, measured.figures, strict=True)
                    for f in figs.features
                ),
                key=lambda rf: rf[1].jsd,
            )
            record.update(max_jsd=worst[1].jsd, max_jsd_feature=worst[0].label(worst[1].feature))
        if detect:
            record.update(self._detect_figures(detect))
        for key in (
            "ks_min_pvalue",
            "chi2_min_pvalue",
            "corr_min_pvalue",
            "max_jsd",
            "max_correlation_change",
            "max_correlation_frobenius",
            "control_region_events",
        ):
            if o[key] is not None:
                record[f"threshold_{key}"] = o[key]
        if independent:
            head = (
                f"attacked half ({len(all_events.attacked):,} events, "
                f"{int(fooled[all_events.attacked].sum()):,} fooled) vs the independent "
                f"nominal half ({len(all_events.reference):,} events, split seed "
                f"{o['split_seed']})"
            )
        else:
            head = (
                f"attacked sample ({int(adv.fooled.sum()):,} of {adv.n_events:,} events fooled) "
                "vs the same events before the attack"
            )
        if adv.kept is not None:
            record["n_events_tested"] = len(adv.kept)
            record["keep_seed"] = KEEP_SEED
        if failures:
            summary = f"{head} differs from nominal: {'; '.join(failures)} | attack "
        else:
            summary = f"{head}: statistically unchanged | attack "
        sampled = [f"distributions compared {adv.kept_note()}"] if adv.kept is not None else []
        details = [
            *adv.warnings,
            *adv.notes,
            *sampled,
            *self._correction_note(tests),
            *self._comparison_note(measured, independent),
            *measured.skipped,
            *self._table(measured, tests, detect),
            *self.scan_details(adv.attack),
        ]
        return self.result(
            not failures,
            summary + adv.description,
            figures=record,
            details=details,
            attack=adv.description,
        )

    def _measure(
        self,
        adv: Adversaries,
        movable: dict[str, np.ndarray],
        regions: list[Region],
        independent: bool,
    ) -> Measured:
        """Every region's figures and tests; with independent halves also the paired
        figures on the region's events before and after the attack (for events_to_detect)."""
        o = self.options
        measured = Measured(regions, [])
        nominal, adversarial, real, features, movable = self.tested(adv, movable)
        for region in regions:
            reference = entries(nominal, real, features, region.reference)
            attacked = entries(adversarial, real, features, region.attacked)
            reference_ids = event_ids(real, features, region.reference)
            same_events = region.attacked is region.reference
            figures = compare(
                reference,
                attacked,
                features,
                movable,
                int(o["bins"]),
                reference_events=reference_ids,
                attacked_events=(
                    reference_ids if same_events else event_ids(real, features, region.attacked)
                ),
            )
            measured.figures.append(figures)
            del reference, attacked, reference_ids  # before the paired copies below
            paired = figures
            if independent:  # the attack's own displacement, for events_to_detect
                both = np.sort(np.concatenate([region.attacked, region.reference]))
                ids = event_ids(real, features, both)
                paired = compare(
                    entries(nominal, real, features, both),
                    entries(adversarial, real, features, both),
                    features,
                    movable,
                    int(o["bins"]),
                    reference_events=ids,
                    attacked_events=ids,
                )
            # the paired sample's entries per event, of the input each test reads
            events = max(len(np.union1d(region.attacked, region.reference)), 1)
            by_feature = {f.feature: f for f in paired.features}
            by_pair = {p.features: p for p in paired.pairs}
            for f in figures.features:
                twin = by_feature.get(f.feature)
                per_event = twin.n_reference / events if twin is not None else 1.0
                for kind in ("ks", "chi2"):
                    measured.tests.setdefault(kind, []).append(
                        Test(kind, region, f.feature, f, twin, per_event)
                    )
            for pair in figures.pairs:
                twin_pair = by_pair.get(pair.features)
                per_event = twin_pair.n_reference / events if twin_pair is not None else 1.0
                measured.tests.setdefault("corr", []).append(
                    Test(
                        "corr",
                        region,
                        f"({pair.features[0]}, {pair.features[1]})",
                        pair,
                        twin_pair,
                        per_event,
                    )
                )
        return measured

    def tested(
        self, adv: Adversaries, movable: dict[str, np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """What the tests compare: the nominal and attacked inputs, real-entry masks, feature
        names and movable features, with the [observables] added as one more input (one real
        value per event, every observable movable)."""
        nominal, adversarial, real, features = adv.nominal, adv.adversarial, adv.real, adv.features
        observed = self.observables(adv)
        if observed is None:
            return nominal, adversarial, real, features, movable
        names, before, after = observed
        return (
            {**nominal, OBSERVABLES: before},
            {**adversarial, OBSERVABLES: after},
            {**real, OBSERVABLES: torch_ones(len(before))},
            {**features, OBSERVABLES: names},
            {**movable, OBSERVABLES: np.ones(len(names), dtype=bool)},
        )

    def observables(self, adv: Adversaries) -> tuple[tuple[str, ...], Any, Any] | None:
        """The spec's [observables] on the nominal and attacked inputs of the events held in
        memory: names and two (events, observables) tensors, or None without observables.
        Computed once per attack (kept in ``adv.derived``), however many checks ask."""
        function = getattr(self.run.spec, "observables", None)
        if function is None:
            return None
        if "observables" not in adv.derived:
            adv.derived["observables"] = self._evaluate_observables(function, adv)
        return adv.derived["observables"]

    def _evaluate_observables(
        self, function: str, adv: Adversaries
    ) -> tuple[tuple[str, ...], Any, Any]:
        from robustcheck.observables import evaluate_observables, load_observables, stacked

        path = self.run.spec.path
        compute = load_observables(function, path)
        before = evaluate_observables(compute, adv.nominal, path, "nominal")
        after = evaluate_observables(compute, adv.adversarial, path, "attacked")
        if set(before) != set(after):
            raise ModelError(
                f"the observables function returned {sorted(before)} on the nominal inputs but "
                f"{sorted(after)} on the attacked ones",
                file=path,
                field="observables.function",
            )
        names, nominal = stacked(before)
        return names, nominal, stacked({k: after[k] for k in names})[1]

    # -- regions -------------------------------------------------------------------------------

    def regions(self, adv: Adversaries, independent: bool) -> tuple[list[Region], list[str]]:
        """The inclusive region, then one per true class (by_class), then the named regions,
        each as positions of its attacked and reference events among those held in memory."""
        n = len(adv.correct) if adv.kept is None else len(adv.kept)
        if independent:
            order = np.random.default_rng(int(self.options["split_seed"])).permutation(n)
            attacked, reference = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
        else:
            attacked = reference = np.arange(n)
        out = [Region("all", attacked, reference)]
        skipped: list[str] = []
        wants_score = bool(self.options["regions"])
        if self.options["by_class"] or wants_score:
            _, labels_t = self.run.inputs("nominal")
            labels = labels_t.numpy()
        if self.options["by_class"]:
            for c in np.unique(labels):
                out.append(
                    Region(
                        f"class {int(c)}",
                        attacked[labels[attacked] == c],
                        reference[labels[reference] == c],
                    )
                )
        if wants_score:
            score = self.run.discriminant(self.run.log_probs("nominal"))
            if adv.kept is not None:
                score = score[adv.kept]
            for name, text in self.options["regions"].items():
                region = self._parse_region(name, text)
                out.append(
                    Region(
                        name,
                        attacked[region.select(score[attacked])],
                        reference[region.select(score[reference])],
                        text,
                    )
                )
        kept = [out[0]]
        for region in out[1:]:
            if min(len(region.attacked), len(region.reference)) < 2:
                skipped.append(
                    f"region {region.name}{f' ({region.text})' if region.text else ''} holds "
                    f"{len(region.attacked)} attacked and {len(region.reference)} reference "
                    "events: not tested"
                )
            else:
                kept.append(region)
        return kept, skipped

    def _parse_region(self, name: str, text: str) -> CutRegion:
        try:
            return parse_region(name, text)
        except ValueError as exc:
            raise SpecError(
                str(exc),
                file=self.run.spec.path,
                field=f"checks[{self.spec.index}].regions.{name}",
                fix='e.g. regions = { high_score = "score > 0.8" }',
            ) from None

    # -- p-value tests ---------------------------------------------------------------------------

    def _tests(self, measured: Measured) -> PValueTests | None:
        """The p-value tests with a threshold, every region together, corrected as the
        check's ``correction`` says."""
        raw = {
            kind: np.array([t.pvalue for t in tests], dtype=np.float64)
            for kind, tests in measured.tests.items()
        }
        thresholds = {kind: self.options[option] for kind, (option, _, _) in PVALUE_KINDS.items()}
        tests = pvalue_tests(raw, thresholds, str(self.options["correction"]))
        return tests if tests.n_tests else None

    @staticmethod
    def _pvalue_figures(
        measured: Measured, tests: PValueTests | None
    ) -> dict[str, float | int | str]:
        """Per kind: ``min_KIND_pvalue`` is the figure held against the threshold (corrected
        when the kind is tested), ``min_KIND_pvalue_raw`` the same test's raw p-value."""
        out: dict[str, float | int | str] = {}
        if tests is not None:
            out.update(correction=tests.correction, n_pvalue_tests=tests.n_tests)
        for kind in PVALUE_KINDS:
            found = measured.tests.get(kind, [])
            if not found:
                continue
            raw = np.array([t.pvalue for t in found])
            i = int(np.argsort(raw, kind="stable")[0])  # NaN last
            out[f"min_{kind}_pvalue_raw"] = float(raw[i])
            out[f"min_{kind}_feature"] = found[i].label
            if tests is not None and kind in tests.raw:
                out[f"min_{kind}_pvalue"] = float(tests.adjusted[kind][i])
                out[f"n_{kind}_failing"] = int(tests.rejected(kind).sum())
            else:
                out[f"min_{kind}_pvalue"] = float(raw[i])
        return out

    def _failures(
        self, measured: Measured, tests: PValueTests | None, detect: list[tuple[Test, float]]
    ) -> list[str]:
        o = self.options
        out = []
        per_feature = ("ks_min_pvalue", "chi2_min_pvalue", "max_jsd")
        if not measured.figures[0].features and any(o[key] is not None for key in per_feature):
            out.append(
                "no movable feature to test (every feature is frozen, integer or a "
                "placeholder), so the per-feature thresholds cannot be checked"
            )
        if tests is not None:
            out += self._pvalue_failures(measured, tests)
        limit = o["max_jsd"]
        for region, figures in zip(measured.regions, measured.figures, strict=True):
            if figures.features and limit is not None and figures.max_jsd.jsd > limit:
                worst = figures.max_jsd
                out.append(
                    f"JS distance {worst.jsd:.3g} > max {limit:g} for {region.label(worst.feature)}"
                )
        limit = o["max_correlation_change"]
        for region, figures in zip(measured.regions, measured.figures, strict=True):
            if limit is not None and figures.correlation_change > limit:
                a, b = figures.correlation_pair
                out.append(
                    f"correlation change {figures.correlation_change:.3g} "
                    f"{region.label(f'({a}, {b})')} > max {limit:g}"
                )
        limit = o["max_correlation_frobenius"]
        for region, figures in zip(measured.regions, measured.figures, strict=True):
            if limit is not None and figures.correlation_frobenius > limit:
                out.append(
                    f"relative Frobenius change of correlations {figures.correlation_frobenius:.3g}"
                    f"{'' if region.name == 'all' else ' in ' + region.name} > max {limit:g}"
                )
        limit = o["control_region_events"]
        if limit is not None and detect:
            visible = [(t, n) for t, n in detect if n <= limit]
            if visible:
                test, n = min(visible, key=lambda tn: tn[1])
                more = f" (and {len(visible) - 1} more tests)" if len(visible) > 1 else ""
                out.append(
                    f"{PVALUE_KINDS[test.kind][1]} shift of {test.label} visible from "
                    f"{n:,.0f} events per sample{more} <= control_region_events {limit:g}"
                )
        return out

    @staticmethod
    def _pvalue_failures(measured: Measured, tests: PValueTests, named: int = 3) -> list[str]:
        out = []
        for kind, (_, label, _) in PVALUE_KINDS.items():
            if kind not in tests.raw:
                continue
            found = measured.tests[kind]
            raw, adjusted, limit = tests.raw[kind], tests.adjusted[kind], tests.thresholds[kind]
            failing = np.flatnonzero(tests.rejected(kind))
            if not len(failing):
                continue
            failing = failing[np.argsort(raw[failing], kind="stable")]
            i = int(failing[0])
            if tests.correction == "none":  # the uncorrected message, worst feature only
                out.append(f"{label} p-value {raw[i]:.3g} < min {limit:g} for {found[i].label}")
                continue
            names = ", ".join(found[int(j)].label for j in failing[:named])
            if len(failing) > named:
                names += f" and {len(failing) - named} more"
            out.append(
                f"{label} p-value {adjusted[i]:.3g} Holm-corrected over {tests.n_tests} tests "
                f"(raw {raw[i]:.3g}) < min {limit:g} for {names}"
            )
        return out

    @staticmethod
    def _correlation_figures(measured: Measured) -> dict[str, float | int | str]:
        """The largest correlation change over the regions, where, and its standard error."""
        best = max(
            zip(measured.regions, measured.figures, strict=True),
            key=lambda rf: rf[1].correlation_change,
        )
        out: dict[str, float | int | str] = {
            "correlation_change": best[1].correlation_change,
            "correlation_frobenius": max(f.correlation_frobenius for f in measured.figures),
        }
        if best[1].correlation_change > 0:
            out["correlation_change_where"] = best[0].label(", ".join(best[1].correlation_pair))
        pairs = [p for p in best[1].pairs if set(p.features) == set(best[1].correlation_pair)]
        if pairs:
            out["correlation_change_error"] = pairs[0].standard_error
        return out

    @staticmethod
    def _correction_note(tests: PValueTests | None) -> list[str]:
        if tests is None:
            return []
        counts = ", ".join(f"{tests.raw[k].shape[-1]} {PVALUE_KINDS[k][1]}" for k in tests.raw)
        if tests.correction == "none":
            return [
                f'p-values not corrected (correction = "none"): each of the {tests.n_tests} '
                f"tests ({counts}) is held at its threshold on its own, so an unchanged sample "
                f"fails the check up to {tests.n_tests} times as often as the threshold"
            ]
        return [
            f"p-values Holm-corrected over {tests.n_tests} tests ({counts}): an unchanged "
            f"sample fails the check with probability at most "
            f"{max(tests.thresholds.values()):g}"
        ]

    @staticmethod
    def _comparison_note(measured: Measured, independent: bool) -> list[str]:
        named = [r.name + (f" ({r.text})" if r.text else "") for r in measured.regions[1:]]
        where = f"; regions: all, {', '.join(named)}" if named else ""
        if independent:
            note = [
                'compare_to = "independent": the attacked values of one half of the nominal '
                "sample against the nominal values of the other half (the distances JSD and "
                f"correlation change include both halves' sampling noise){where}"
            ]
            return note + Invariance._cluster_note(measured)
        return [
            'compare_to = "same_events": the attacked sample against the same events before '
            "the attack; the events the attack leaves alone are identical in both, so the "
            f"p-values are conservative{where}",
            *Invariance._cluster_note(measured),
        ]

    @staticmethod
    def _cluster_note(measured: Measured) -> list[str]:
        """Which inputs' tests were corrected for several entries per event (inclusive
        region): entries per event and design effects (robustcheck.invariance_stats)."""
        out = []
        for name, (figs, pairs) in Invariance._corrected_inputs(measured).items():
            ks = [f.ks_deff for f in figs]
            chi2 = [f.chi2_deff for f in figs]
            corr = f", correlation {_span(pairs)}" if pairs else ""
            out.append(
                f"tests on input {name} corrected for the correlation of its "
                f"{figs[0].entries_per_event:.3g} entries per event (design effect D: KS "
                f"{_span(ks)}, chi2 {_span(chi2)}{corr}; robustcheck.invariance_stats)"
            )
        return out

    @staticmethod
    def _corrected_inputs(
        measured: Measured,
    ) -> dict[str, tuple[list[FeatureFigures], list[float]]]:
        """Per input with several entries per event (inclusive region): its features' figures
        and its correlation pairs' design effects (the larger of the two samples')."""
        inclusive = measured.figures[0]
        out: dict[str, tuple[list[FeatureFigures], list[float]]] = {}
        for f in inclusive.features:
            if f.entries_per_event > 1.0:
                out.setdefault(f.input, ([], []))[0].append(f)
        for p in inclusive.pairs:
            if p.input in out:
                out[p.input][1].append(max(p.deff_reference, p.deff_attacked))
        return out

    @staticmethod
    def _design_effect_figures(measured: Measured) -> dict[str, float | int | str]:
        """Per corrected input: ``entries_per_event/INPUT`` and ``design_effect/INPUT``, the
        largest design effect of its tests (inclusive region)."""
        out: dict[str, float | int | str] = {}
        for name, (figs, pairs) in Invariance._corrected_inputs(measured).items():
            out[f"entries_per_event/{name}"] = figs[0].entries_per_event
            out[f"design_effect/{name}"] = max(
                [f.ks_deff for f in figs] + [f.chi2_deff for f in figs] + pairs
            )
        return out

    # -- detectability ---------------------------------------------------------------------------

    def _events_to_detect(
        self, measured: Measured, tests: PValueTests | None
    ) -> list[tuple[Test, float]]:
        """Every tested kind's tests with the events per sample at which each would see its
        measured shift, at the per-test level of the family (see the module's doc)."""
        if tests is None:
            return []
        per_test = tests.n_tests if tests.correction == "holm" else 1
        out = []
        for kind in tests.raw:
            level = tests.thresholds[kind] / per_test
            if not level > 0:
                continue
            for t in measured.tests[kind]:
                f = t.paired
                if f is None:
                    n = float("inf")
                elif kind == "ks":  # effective entries n / deff
                    n = ks_events_to_detect(f.ks_statistic, level) * f.ks_deff
                elif kind == "chi2":
                    n = chi2_events_to_detect(  # Rao-Scott corrected (1 for one entry)
                        f.chi2_statistic / f.chi2_spread,
                        f.chi2_dof / f.chi2_spread,
                        f.n_reference,
                        f.n_attacked,
                        level,
                    )
                else:
                    assert isinstance(f, PairFigures)
                    n = correlation_events_to_detect(f, level)
                out.append((t, n / t.entries_per_event))
        return out

    @staticmethod
    def _detect_figures(detect: list[tuple[Test, float]]) -> dict[str, float | int | str]:
        """The smallest ``events_to_detect`` over the check and where, then one figure per
        test: ``events_to_detect/KIND/REGION/FEATURE``."""
        test, n = min(detect, key=lambda tn: tn[1])
        out: dict[str, float | int | str] = {"events_to_detect": n}
        if np.isfinite(n):
            out["events_to_detect_test"] = f"{PVALUE_KINDS[test.kind][1]} {test.label}"
        for t, n in detect:
            out[f"events_to_detect/{t.kind}/{t.region.name}/{t.name}"] = n
        return out

    @staticmethod
    def _table(
        measured: Measured,
        tests: PValueTests | None,
        detect: list[tuple[Test, float]],
        rows: int = 8,
    ) -> list[str]:
        """The features with the smallest KS p-values over the regions, with their figures."""
        ks = measured.tests.get("ks", [])
        if not ks:
            return []
        corrected = {} if tests is None or tests.correction == "none" else tests.adjusted
        chi2 = {id(t.figures): i for i, t in enumerate(measured.tests.get("chi2", []))}
        fewest: dict[int, float] = {}
        for t, n in detect:
            if t.kind != "corr":
                fewest[id(t.figures)] = min(n, fewest.get(id(t.figures), np.inf))
        order = sorted(range(len(ks)), key=lambda i: ks[i].pvalue)[:rows]
        width = max(len(ks[i].label) for i in order)
        head = f"{'feature':<{width}}  KS D      KS p      "
        head += "KS p Holm " if "ks" in corrected else ""
        head += "chi2 p    " + ("chi2 Holm " if "chi2" in corrected else "") + "JSD       "
        head += "events to detect" if detect else ""
        lines = [head.rstrip()]
        for i in order:
            t = ks[i]
            f = t.figures
            line = f"{t.label:<{width}}  {f.ks_statistic:<8.3g}  {f.ks_pvalue:<8.3g}  "
            if "ks" in corrected:
                line += f"{corrected['ks'][i]:<8.3g}  "
            line += f"{f.chi2_pvalue:<8.3g}  "
            if "chi2" in corrected:
                line += f"{corrected['chi2'][chi2[id(f)]]:<8.3g}  "
            line += f"{f.jsd:<8.3g}  "
            if detect:
                n = fewest.get(id(f), np.inf)
                line += f"{n:,.0f}" if np.isfinite(n) else "no shift"
            lines.append(line.rstrip())
        return lines


def _span(values: list[float]) -> str:
    """``a-b`` of the smallest and largest value, or the one value."""
    low, high = min(values), max(values)
    return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}-{high:.3g}"
