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
from robustcheck.spec import parse_spec
from tests.conftest import base_spec

THRESHOLDS = {"ks_min_pvalue": 0.01, "chi2_min_pvalue": 0.01, "max_correlation_change": 0.02}


def spec_with_attacks(model_dir: Path, epsilon: float = 3.0) -> SpecRun:
    doc = base_spec()
    doc["attacks"] = {
        "plain": {"method": "pgd", "epsilon": epsilon, "steps": 20, "seed": 2},
        "hidden": {"method": "constrained_pgd", "epsilon": epsilon, "steps": 20, "seed": 2,
                   "scan": [1.0, epsilon]},
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
        attack="a", description="d", epsilon=1.0, seed=0,
        nominal={"p": torch.from_numpy(nominal)},
        adversarial={"p": torch.from_numpy(perturbed)},
        log_probs=torch.zeros(n, 2), correct=torch.ones(n, dtype=torch.bool),
        fooled=torch.zeros(n, dtype=torch.bool), sigma={}, real={"p": torch.from_numpy(mask)},
        features={"p": ("a", "b")}, seconds=0.0,
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
