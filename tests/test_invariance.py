"""The invariance check and the constrained (hidden systematics) attack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from robustcheck.attacks.constrained import distribution_distance
from robustcheck.checks.invariance import measure
from robustcheck.core import Adversaries, SpecRun
from robustcheck.errors import SpecError
from robustcheck.report.records import check_record
from robustcheck.spec import parse_spec
from tests.conftest import base_spec
from tests.test_invariance_calibration import holm_loop

THRESHOLDS = {"ks_min_pvalue": 0.01, "chi2_min_pvalue": 0.01, "corr_min_pvalue": 0.01}
# KS and chi2 only in the p-value family (the Holm tests below count them)
PER_FEATURE = {"ks_min_pvalue": 0.01, "chi2_min_pvalue": 0.01, "max_correlation_change": 0.02}


def spec_with_attacks(model_dir: Path, epsilon: float = 3.0) -> SpecRun:
    doc = base_spec()
    doc["attacks"] = {
        "plain": {"method": "pgd", "epsilon": epsilon, "steps": 20, "seed": 2},
        "hidden": {
            "method": "constrained_pgd",
            "epsilon": epsilon,
            "steps": 20,
            "seed": 2,
            "scan": [1.0, epsilon],
        },
    }
    doc["checks"] = [
        {"name": "plain", "type": "invariance", "attack": "plain", **THRESHOLDS},
        {"name": "hidden", "type": "invariance", "attack": "hidden", **THRESHOLDS},
        {"name": "hidden rate", "type": "fooling_rate", "attack": "hidden", "max": 1.0},
        {"name": "plain rate", "type": "fooling_rate", "attack": "plain", "max": 1.0},
    ]
    return SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")


def test_plain_pgd_is_seen_and_constrained_pgd_is_not(model_dir: Path) -> None:
    run = spec_with_attacks(model_dir)
    plain, hidden, hidden_rate, plain_rate = run.run()
    assert not plain.passed
    assert "differs from nominal: KS p-value" in plain.summary
    assert plain.figures["min_ks_pvalue"] < 1e-6
    assert hidden.passed, hidden.message()
    assert hidden.figures["min_ks_pvalue"] > 0.5
    # ... while it still fools a measurable fraction, comparable to plain PGD
    assert hidden_rate.figures["ci_low"] > 0
    assert hidden_rate.figures["n_fooled"] >= 0.5 * plain_rate.figures["n_fooled"]
    # the scan table is part of the message
    assert any(line.startswith("epsilon  fooling rate") for line in hidden.details)
    # constrained_pgd has no random start: its seed changes nothing and is not claimed
    assert "no random start" in hidden.summary and "seed" not in hidden.figures
    assert "seed" not in hidden_rate.figures and plain.figures["seed"] == 2


def test_constrained_attack_leaves_unfooled_events_nominal(model_dir: Path) -> None:
    adv = spec_with_attacks(model_dir).adversaries("hidden")
    unchanged = (adv.adversarial["x"] == adv.nominal["x"]).all(dim=1)
    assert bool(unchanged[~adv.fooled].all())
    assert int((~unchanged).sum()) == int(adv.fooled.sum()) > 0


def test_measure_matches_scipy_and_excludes_padding() -> None:
    rng = np.random.default_rng(5)
    n, particles = 300, 6
    nominal = rng.normal(size=(n, particles, 2)).astype(np.float32)
    mask = rng.random((n, particles)) < 0.7
    nominal[~mask] = 0.0
    perturbed = nominal.copy()
    perturbed[..., 0] += 0.3 * mask
    adv = Adversaries(
        attack="a",
        description="d",
        epsilon=1.0,
        seed=0,
        nominal={"p": torch.from_numpy(nominal)},
        adversarial={"p": torch.from_numpy(perturbed)},
        log_probs=torch.zeros(n, 2),
        correct=torch.ones(n, dtype=torch.bool),
        fooled=torch.zeros(n, dtype=torch.bool),
        sigma={},
        real={"p": torch.from_numpy(mask)},
        features={"p": ("a", "b")},
        seconds=0.0,
    )
    figures = measure(adv, {"p": np.array([True, True])})
    real_a, real_b = nominal[mask], perturbed[mask]
    for i, feature in enumerate(figures.features):
        expected = stats.ks_2samp(real_a[:, i], real_b[:, i], method="asymp")
        assert feature.ks_statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert feature.ks_pvalue == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)
    assert figures.n_entries == int(mask.sum())
    c_a, c_b = np.corrcoef(real_a.T), np.corrcoef(real_b.T)
    assert figures.correlation_change == pytest.approx(abs(c_b - c_a).max(), abs=1e-9)


def test_distribution_distance() -> None:
    torch.manual_seed(0)
    x = torch.randn(2000, 3)
    real = torch.ones(2000, dtype=torch.bool)
    assert float(distribution_distance(x, x, real)) == pytest.approx(0.0, abs=1e-10)
    shifted = x.clone()
    shifted[:, 0] += 0.1 * x[:, 0].std()
    assert float(distribution_distance(x, shifted, real)) == pytest.approx(0.01, rel=1e-3)
    # padding entries do not count
    padded = torch.cat([x, torch.full((500, 3), 99.0)])
    mask = torch.cat([real, torch.zeros(500, dtype=torch.bool)])
    moved = padded.clone()
    moved[2000:] = -99.0
    assert float(distribution_distance(padded, moved, mask)) == pytest.approx(0.0, abs=1e-8)
    # the distance is differentiable in the perturbed sample
    y = x.clone().requires_grad_(True)
    distribution_distance(x, y * 1.1, real).backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_invariance_needs_a_threshold(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"] = [{"type": "invariance", "attack": "pgd"}]
    with pytest.raises(SpecError, match="sets no threshold, so it could never fail"):
        parse_spec(doc, model_dir / "robustness.toml")


def test_invariance_without_a_movable_feature_does_not_pass_vacuously(model_dir: Path) -> None:
    doc = base_spec()
    doc["envelope"]["x"] = {f: {"frozen": True} for f in doc["envelope"]["x"]}
    doc["checks"] = [{"type": "invariance", "attack": "pgd", "ks_min_pvalue": 0.01}]
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    result = run.run()[0]
    assert not result.passed
    assert "no movable feature to test" in result.summary


def small_shift_run(model_dir: Path, *checks: dict) -> SpecRun:
    """PGD at 0.3 sigma: jet_pt's distribution moves visibly but not overwhelmingly."""
    doc = base_spec()
    doc["attacks"] = {"small": {"method": "pgd", "epsilon": 0.3, "steps": 20, "seed": 2}}
    doc["checks"] = [
        {"type": "invariance", "attack": "small", "compare_to": "same_events", **c} for c in checks
    ]
    return SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")


def raw_pvalues(run: SpecRun) -> tuple[list[str], list[float]]:
    """The features and their KS then chi2 p-values, as measure() computes them."""
    movable = {name: env.movable.numpy() for name, env in run.envelope.inputs.items()}
    figures = measure(run.adversaries("small"), movable)
    names = [f.feature for f in figures.features]
    return names, [f.ks_pvalue for f in figures.features] + [
        f.chi2_pvalue for f in figures.features
    ]


def test_holm_failure_names_the_correction_and_reports_raw_and_corrected(
    model_dir: Path,
) -> None:
    run = small_shift_run(model_dir, {"name": "holm", **PER_FEATURE})
    (result,) = run.run()
    names, pvalues = raw_pvalues(run)
    m = len(pvalues)
    assert m == 6  # jet_pt, jet_mass, jet_eta (n_const is frozen), KS and chi2
    adjusted = holm_loop(pvalues)
    ks = int(np.argmin(pvalues[: m // 2]))
    chi2 = m // 2 + int(np.argmin(pvalues[m // 2 :]))
    assert adjusted[ks] < 0.01 and pvalues[ks] < adjusted[ks]  # moved, and corrected
    assert not result.passed
    assert f"KS p-value {adjusted[ks]:.3g} Holm-corrected over {m} tests (raw " in result.summary
    assert "chi2 p-value " in result.summary and f"over {m} tests" in result.summary
    assert f"p-values Holm-corrected over {m} tests (3 KS, 3 chi2)" in result.details[0]

    record = check_record(str(run.spec.path), run.spec.checks[0], 0.0, result)
    figures = record["figures"]
    assert figures["correction"] == "holm" and figures["n_pvalue_tests"] == m
    assert figures["min_ks_feature"] == names[ks]
    assert figures["min_ks_pvalue_raw"] == pytest.approx(pvalues[ks], rel=1e-12)
    assert figures["min_ks_pvalue"] == pytest.approx(adjusted[ks], rel=1e-12)
    assert figures["min_chi2_pvalue_raw"] == pytest.approx(pvalues[chi2], rel=1e-12)
    assert figures["min_chi2_pvalue"] == pytest.approx(adjusted[chi2], rel=1e-12)
    failing = sum(a < 0.01 for a in adjusted[: m // 2])
    assert figures["n_ks_failing"] == failing >= 1
    # the report's comparisons hold the corrected p-value against the threshold
    by_label = {c["label"]: c for c in record["comparisons"]}
    assert by_label["min KS p-value"]["figure"] == pytest.approx(adjusted[ks], rel=1e-12)
    assert by_label["min KS p-value"]["holds"] is False
    assert by_label["min chi2 p-value"]["threshold"] == 0.01


def test_holm_passes_where_a_per_test_threshold_alarms_and_none_keeps_the_old_rule(
    model_dir: Path,
) -> None:
    """A threshold between the smallest raw KS p-value and its Holm-adjusted value: the
    uncorrected rule of earlier versions fails, the corrected check passes."""
    run = small_shift_run(model_dir, {"ks_min_pvalue": 0.01})
    names, pvalues = raw_pvalues(run)
    ks = pvalues[:3]
    worst = int(np.argmin(ks))
    adjusted = holm_loop(ks)  # only the KS tests have a threshold: a family of 3
    assert adjusted[worst] == pytest.approx(3 * ks[worst], rel=1e-12)
    assert adjusted[worst] < 1
    threshold = float(np.sqrt(ks[worst] * adjusted[worst]))
    run = small_shift_run(
        model_dir,
        {"name": "holm", "ks_min_pvalue": threshold},
        {"name": "none", "ks_min_pvalue": threshold, "correction": "none"},
    )
    holm, none = run.run()
    assert holm.passed, holm.message()
    assert holm.figures["min_ks_pvalue"] == pytest.approx(adjusted[worst], rel=1e-12)
    assert holm.figures["min_ks_pvalue_raw"] == pytest.approx(ks[worst], rel=1e-12)
    assert "p-values Holm-corrected over 3 tests (3 KS)" in holm.details[0]
    # none: each p-value at the threshold on its own, the message of earlier versions
    old_rule = [p < threshold for p in ks]
    assert not none.passed and any(old_rule)
    assert f"KS p-value {ks[worst]:.3g} < min {threshold:g} for {names[worst]}" in none.summary
    assert "Holm" not in none.summary
    assert none.figures["correction"] == "none"
    assert none.figures["min_ks_pvalue"] == none.figures["min_ks_pvalue_raw"]
    assert none.figures["min_ks_pvalue"] == pytest.approx(ks[worst], rel=1e-12)
    assert 'correction = "none"' in none.details[0]


def test_correction_is_validated(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"] = [
        {"type": "invariance", "attack": "pgd", "ks_min_pvalue": 0.01, "correction": "bonferoni"}
    ]
    with pytest.raises(SpecError, match="not one of"):
        parse_spec(doc, model_dir / "robustness.toml")
