"""compare_to, control regions and detectability of the invariance check, on synthetic samples.

A stand-in run hands the check an attacked sample built here (no model), so the null studies
can repeat the check's whole path (split, regions, tests, Holm) hundreds of times.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck import registry
from robustcheck.checks.invariance import Invariance
from robustcheck.core import Adversaries, SpecRun
from robustcheck.errors import SpecError
from robustcheck.schema import validate
from robustcheck.spec import CheckSpec, parse_spec
from robustcheck.stats import clopper_pearson
from tests.conftest import base_spec

FEATURES = ("a", "b", "c")


class StandInRun:
    """What the invariance check reads of a SpecRun, over a given attacked sample."""

    def __init__(self, nominal: np.ndarray, attacked: np.ndarray, labels: np.ndarray) -> None:
        n = len(labels)
        score = 1.0 / (1.0 + np.exp(-nominal[:, 0]))  # a discriminant rising with feature a
        self._log_probs = torch.from_numpy(np.log(np.stack([1 - score, score], axis=1)))
        self._labels = torch.from_numpy(labels)
        moved = torch.from_numpy((attacked != nominal).any(axis=1))
        self._adv = Adversaries(
            attack="atk",
            description="synthetic attack",
            epsilon=1.0,
            seed=0,
            nominal={"x": torch.from_numpy(nominal)},
            adversarial={"x": torch.from_numpy(attacked)},
            log_probs=self._log_probs,
            correct=torch.ones(n, dtype=torch.bool),
            fooled=moved,
            sigma={},
            real={"x": torch.ones(n, dtype=torch.bool)},
            features={"x": FEATURES},
            seconds=0.0,
            uses_seed=False,
        )
        movable = torch.ones(len(FEATURES), dtype=torch.bool)
        self.envelope = SimpleNamespace(inputs={"x": SimpleNamespace(movable=movable)})
        self.spec = SimpleNamespace(
            path=Path("synthetic.robust.toml"),
            attacks={"atk": SimpleNamespace(options={})},
        )

    def adversaries(self, name: str, *args: Any, **kwargs: Any) -> Adversaries:
        return self._adv

    def inputs(self, sample: str = "nominal") -> tuple[dict, torch.Tensor]:
        return self._adv.nominal, self._labels

    def log_probs(self, sample: str = "nominal") -> torch.Tensor:
        return self._log_probs

    def discriminant(self, log_probs: torch.Tensor) -> np.ndarray:
        return log_probs[:, 1].double().exp().numpy()


def check(run: StandInRun, **options: Any) -> Any:
    table = {"type": "invariance", "attack": "atk", **options}
    validated = validate(table, registry.checks()["invariance"].options, "checks[0]", "x.toml")
    spec = CheckSpec(0, "synthetic", "invariance", validated)
    return Invariance(spec, run).evaluate()  # type: ignore[arg-type]


def correlated(rng: np.random.Generator, n: int) -> np.ndarray:
    """Three features: two Gaussians with correlation 0.5 and a log-normal."""
    z = rng.standard_normal((n, 3))
    x = np.empty((n, 3))
    x[:, 0] = z[:, 0]
    x[:, 1] = 0.5 * z[:, 0] + np.sqrt(0.75) * z[:, 1]
    x[:, 2] = np.exp(0.5 * z[:, 2])
    return x.astype(np.float32)


def test_independent_comparison_keeps_its_false_alarm_rate_on_unchanged_samples() -> None:
    """An attack that moves nothing: each repetition is a fresh sample of 600 events, tested
    inclusively, per class and in two score regions (5 regions x 3 features x KS and chi2 plus
    5 x 3 correlation pairs = 45 tests, Holm-corrected together) at thresholds 0.2. The check
    fails at most 20% of unchanged samples: measured 17% (34 of 200, 95% CL 12-23%).
    same_events cannot fail: its two samples are identical."""
    rng = np.random.default_rng(19)
    alarms, repetitions = 0, 200
    same_alarms_of: list[bool] = []
    thresholds = {"ks_min_pvalue": 0.2, "chi2_min_pvalue": 0.2, "corr_min_pvalue": 0.2}
    regions = {"low": "score < 0.3", "high": "score > 0.7"}
    for _ in range(repetitions):
        x = correlated(rng, 600)
        run = StandInRun(x, x.copy(), rng.integers(0, 2, len(x)))
        result = check(run, by_class=True, regions=regions, **thresholds)
        assert result.figures["n_pvalue_tests"] == 45
        alarms += not result.passed
        if len(same_alarms_of) < 20:
            same_alarms_of.append(not check(run, compare_to="same_events", **thresholds).passed)
    low, high = clopper_pearson(alarms, repetitions)
    assert low <= 0.2, f"{alarms} false alarms in {repetitions}"
    print(f"false alarms {alarms} of {repetitions} (95% CL {low:.3f}-{high:.3f})")
    assert alarms >= 5  # not vacuous: p-values of independent halves are spread over [0, 1]
    assert not any(same_alarms_of)
    assert 'compare_to = "independent"' in result.details[1]
    assert "vs the independent nominal half (300 events, split seed 0)" in result.summary
    assert result.figures["split_seed"] == 0 and result.figures["compare_to"] == "independent"
    # nothing moved: no shift to detect, whatever the sample's size
    assert result.figures["events_to_detect"] == float("inf")


def test_per_class_tests_catch_a_class_dependent_shift_the_inclusive_test_misses() -> None:
    """Class 0 pushed up and class 1 pushed down by 0.3 (feature b, same distribution in both
    classes): the inclusive marginal only widens a little, each class moves."""
    rng = np.random.default_rng(7)
    n = 8000
    x = correlated(rng, n)
    labels = rng.integers(0, 2, n)
    attacked = x.copy()
    attacked[:, 1] += np.where(labels == 0, 0.3, -0.3).astype(np.float32)
    run = StandInRun(x, attacked, labels)
    thresholds = {"ks_min_pvalue": 0.01, "chi2_min_pvalue": 0.01}
    inclusive = check(run, **thresholds)
    assert inclusive.passed, inclusive.message()
    per_class = check(run, by_class=True, **thresholds)
    assert not per_class.passed
    assert "KS p-value" in per_class.summary
    assert "b in class 0" in per_class.summary and "b in class 1" in per_class.summary
    assert per_class.figures["min_ks_feature"] in ("b in class 0", "b in class 1")
    assert per_class.figures["n_pvalue_tests"] == 18  # 3 regions x 3 features x 2 kinds
    assert "regions: all, class 0, class 1" in " ".join(per_class.details)


def test_regions_cut_on_the_nominal_score() -> None:
    """A shift of feature c only in events with a high nominal score is seen in that region."""
    rng = np.random.default_rng(8)
    n = 20000
    x = correlated(rng, n)
    attacked = x.copy()
    score = 1.0 / (1.0 + np.exp(-x[:, 0]))
    attacked[score > 0.8, 2] *= 1.2
    run = StandInRun(x, attacked, rng.integers(0, 2, n))
    result = check(run, ks_min_pvalue=0.01, regions={"high_score": "score > 0.8"})
    assert not result.passed
    assert "c in high_score" in result.summary
    assert "regions: all, high_score (score > 0.8)" in " ".join(result.details)
    detect = result.figures["events_to_detect/ks/high_score/c"]
    assert detect < result.figures["events_to_detect/ks/all/c"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("score >> 0.8", "cannot read 'score >> 0.8'"),
        ("__import__('os')", "cannot read"),
        ("score > 0.8 or score < 0.1", "cannot read"),
        ("", "is empty"),
    ],
)
def test_regions_are_parsed_not_evaluated(model_dir: Path, text: str, message: str) -> None:
    doc = base_spec()
    doc["checks"] = [
        {"type": "invariance", "attack": "pgd", "ks_min_pvalue": 0.01, "regions": {"r": text}}
    ]
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(doc, model_dir / "robustness.toml")
    assert info.value.field == "checks[0].regions.r"
    assert "score OP NUMBER" in (info.value.fix or "")


def test_control_region_events_needs_a_pvalue_threshold(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"] = [
        {"type": "invariance", "attack": "pgd", "max_jsd": 0.1, "control_region_events": 1e6}
    ]
    with pytest.raises(SpecError, match="needs a p-value threshold") as info:
        parse_spec(doc, model_dir / "robustness.toml")
    assert info.value.field == "checks[0].control_region_events"


def test_plain_pgd_with_unfooled_events_put_back_is_visible_at_the_analysis_statistics(
    model_dir: Path,
) -> None:
    """PGD at 3 sigma whose unfooled events are put back (constrained_pgd without its
    distribution penalty): at the sample's 3,000 events the same-events KS test passes
    (p 0.5), but the attack's shift would be seen with a few thousand events per sample, far
    fewer than a control region of 1e6 jets holds."""
    doc = base_spec()
    doc["attacks"] = {
        "restored": {
            "method": "constrained_pgd",
            "epsilon": 3.0,
            "steps": 20,
            "lambda_dist": 0.0,
        }
    }
    thresholds = {"ks_min_pvalue": 0.01, "chi2_min_pvalue": 0.01}
    doc["checks"] = [
        {"name": "same", "type": "invariance", "attack": "restored", "compare_to": "same_events"},
        {"name": "same at 1e6", "type": "invariance", "attack": "restored"},
        {"name": "independent at 1e6", "type": "invariance", "attack": "restored"},
        {"name": "per class at 1e6", "type": "invariance", "attack": "restored"},
    ]
    doc["checks"][0].update(thresholds)
    doc["checks"][1].update(thresholds, compare_to="same_events", control_region_events=1e6)
    doc["checks"][2].update(thresholds, control_region_events=1e6)
    doc["checks"][3].update(thresholds, control_region_events=1e6, by_class=True)
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    same, same_1e6, independent, per_class = run.run()
    assert same.passed, same.message()
    assert same.figures["min_ks_pvalue_raw"] > 0.1
    for result in (same_1e6, independent, per_class):
        assert not result.passed
        n = result.figures["events_to_detect"]
        assert 100 < n < 1e5
        assert f"visible from {n:,.0f} events per sample" in result.summary
        assert "<= control_region_events 1e+06" in result.summary
        assert ("events_to_detect", n) in result.properties()
        assert result.figures["threshold_control_region_events"] == 1e6
    # the same displacement whichever comparison the p-values use
    assert independent.figures["events_to_detect/ks/all/jet_pt"] == pytest.approx(
        same_1e6.figures["events_to_detect/ks/all/jet_pt"]
    )
    assert "events to detect" in "\n".join(independent.details)
    # within a class the shift is directional and shows sooner
    assert per_class.figures["events_to_detect"] < independent.figures["events_to_detect"]
    assert "in class" in per_class.figures["events_to_detect_test"]
