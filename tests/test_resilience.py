"""Resilience, AUC under attack, working points and the signal-fraction fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from robustcheck.checks.fraction_bias import fraction_fit
from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.spec import parse_spec
from robustcheck.stats import auc, auc_standard_error
from tests.conftest import base_spec, copy_models, make_events, write_spec


def run_with(folder: Path, checks: list[dict[str, Any]], alt: str = "other.npz") -> SpecRun:
    doc = base_spec()
    doc["data"]["alternative"] = {"path": alt, "labels": "y", "inputs": {"x": "x"}}
    doc["checks"] = checks
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.fixture(scope="module")
def folder(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the models and data, with a second generator ``other.npz``
    (softer mass and fewer extra constituents in class 1)."""
    path = copy_models(model_dir, tmp_path_factory.mktemp("resilience"))
    np.savez(path / "other.npz", **make_events(3000, seed=4, shift=-0.1, multiplicity_gap=8.0))
    return path


@pytest.fixture(scope="module")
def same_generator(folder: Path) -> str:
    """A second sample from the nominal generator (another seed, no shift)."""
    np.savez(folder / "same.npz", **make_events(3000, seed=3))
    return "same.npz"


def test_resilience_fails_on_a_shifted_generator_and_passes_on_the_same(
    folder: Path, same_generator: str
) -> None:
    check = [{"type": "resilience", "max_auc_change_percent": 1.0}]
    shifted = run_with(folder, check).run()[0]
    same = run_with(folder, check, alt=same_generator).run()[0]
    assert not shifted.passed and same.passed
    assert shifted.figures["auc_change_percent"] > 1.0 > same.figures["auc_change_percent"]
    # the figure is the definition, computed independently with scikit-learn
    run = run_with(folder, check)
    a_nom = roc_auc_score(run.is_signal("nominal"), run.discriminant(run.log_probs("nominal")))
    a_alt = roc_auc_score(
        run.is_signal("alternative"), run.discriminant(run.log_probs("alternative"))
    )
    assert shifted.figures["auc_change_percent"] == pytest.approx(
        100 * abs(a_nom - a_alt) / a_nom, rel=1e-9
    )
    assert "change" in shifted.summary and "> max 1%" in shifted.summary


def test_resilience_working_point_and_min_auc(folder: Path) -> None:
    check = [
        {
            "type": "resilience",
            "min_auc": 0.999,
            "max_rejection_change_percent": 5.0,
            "working_point": {"signal_efficiency": 0.97},
        }
    ]
    result = run_with(folder, check).run()[0]
    assert not result.passed
    assert "nominal AUC" in result.summary and "< min 0.999" in result.summary
    assert "background rejection changes by" in result.summary
    run = run_with(folder, check)
    threshold = result.figures["decision_threshold"]
    scores = run.discriminant(run.log_probs("nominal"))
    signal = run.is_signal("nominal").astype(bool)
    assert np.mean(scores[signal] >= threshold) == pytest.approx(0.97, abs=2 / signal.sum())
    background = scores[~signal]
    assert result.figures["rejection_nominal"] == pytest.approx(
        len(background) / np.sum(background >= threshold)
    )


def test_resilience_needs_an_alternative_sample(folder: Path) -> None:
    doc = base_spec()
    doc["checks"] = [{"type": "resilience", "max_auc_change_percent": 1.0}]
    with pytest.raises(SpecError, match=r"no \[data.alternative\]"):
        parse_spec(doc, folder / "robustness.toml")


def test_auc_under_attack_attacks_every_event(folder: Path) -> None:
    checks = [
        {"type": "auc_under_attack", "attack": "pgd", "max_auc_drop": 0.0},
        {"type": "auc_under_attack", "attack": "pgd", "max_auc_drop": 1.0},
    ]
    run = run_with(folder, checks)
    strict, loose = run.run()
    assert not strict.passed and loose.passed
    adv = run.adversaries("pgd", full=True)
    moved = (adv.adversarial["x"] != adv.nominal["x"]).any(dim=1)
    assert bool(moved[~adv.correct].any())  # misclassified events are attacked too
    labels = run.is_signal("nominal")
    expected = roc_auc_score(labels, run.discriminant(adv.log_probs))
    assert strict.figures["auc_adversarial"] == pytest.approx(expected, rel=1e-9)
    assert strict.figures["auc_drop"] > 0


def test_fooling_rate_at_a_working_point(folder: Path) -> None:
    checks = [
        {
            "type": "fooling_rate",
            "attack": "pgd",
            "max": 1.0,
            "working_point": {"signal_efficiency": 0.3},
        },
        {"type": "fooling_rate", "attack": "pgd", "max": 1.0},
    ]
    run = run_with(folder, checks)
    at_point, argmax = run.run()
    assert at_point.figures["n_events"] != argmax.figures["n_events"]
    assert "decision: signal probability >=" in at_point.message()
    decision = run.decision({"signal_efficiency": 0.3})
    correct = decision.decide(run.log_probs()) == decision.target(run.inputs()[1])
    assert at_point.figures["n_events"] == int(correct.sum())


def test_fraction_fit_recovers_the_truth_on_its_own_templates() -> None:
    rng = np.random.default_rng(0)
    signal = rng.random(20000) < 0.3
    scores = np.where(signal, rng.beta(5, 2, 20000), rng.beta(2, 5, 20000))
    fit = fraction_fit(scores, signal, scores, signal, bins=20)
    assert fit.valid
    assert abs(fit.bias) < 0.02 * fit.error  # the templates' nuisance terms pull it a hair
    exact = fraction_fit(scores, signal, scores, signal, bins=20, method="none")
    assert exact.fraction == pytest.approx(exact.true_fraction, abs=1e-6)
    # a generator that makes background look more signal-like biases the fit upwards
    other = rng.random(20000) < 0.3
    alt = np.where(other, rng.beta(5, 2, 20000), rng.beta(2.6, 5, 20000))
    biased = fraction_fit(scores, signal, alt, other, bins=20)
    assert biased.bias > 5 * biased.error > 0


def test_fraction_fit_error_matches_toy_spread() -> None:
    rng = np.random.default_rng(1)
    signal = rng.random(50000) < 0.4
    scores = np.where(signal, rng.beta(4, 2, 50000), rng.beta(2, 4, 50000))
    fits = []
    for seed in range(60):
        toy = np.random.default_rng(100 + seed)
        s = toy.random(3000) < 0.4
        x = np.where(s, toy.beta(4, 2, 3000), toy.beta(2, 4, 3000))
        fits.append(fraction_fit(scores, signal, x, s, bins=10))
    spread = np.std([f.fraction for f in fits])
    assert np.mean([f.error for f in fits]) == pytest.approx(spread, rel=0.3)


def toy_pulls(method: str, n_nominal: int, toys: int = 100) -> np.ndarray:
    """Pulls (fitted - generated fraction) / error of fits of 3,000-event samples (signal
    fraction 0.4) with templates of ``n_nominal`` events, everything redrawn per toy."""
    pulls = []
    for seed in range(toys):
        rng = np.random.default_rng(500 + seed)
        signal = rng.random(n_nominal) < 0.5
        scores = np.where(signal, rng.beta(4, 2, n_nominal), rng.beta(2, 4, n_nominal))
        n = rng.poisson(3000)
        s = rng.random(n) < 0.4
        x = np.where(s, rng.beta(4, 2, n), rng.beta(2, 4, n))
        fit = fraction_fit(scores, signal, x, s, bins=10, method=method)
        assert fit.valid
        pulls.append((fit.fraction - 0.4) / fit.error)
    return np.asarray(pulls)


def test_template_uncertainty_gives_pulls_of_unit_width() -> None:
    """Templates as large as the fitted sample: Barlow-Beeston-lite pulls have width ~1
    (measured 0.93 over 300 toys), exact templates overstate them (1.31)."""
    light = toy_pulls("da", 3000)
    exact = toy_pulls("none", 3000)
    assert 0.8 < light.std() < 1.15 and abs(light.mean()) < 0.3
    assert exact.std() > 1.15


def test_small_templates_stay_conservative() -> None:
    """Templates of 300 events for a 3,000-event sample: ignoring their uncertainty makes the
    pulls 2.6 times too wide (a false alarm of the max_pull limit), the fit with it slightly
    narrow (0.8: conservative, as Barlow-Beeston-lite is known to be with sparse templates)."""
    light = toy_pulls("da", 300)
    exact = toy_pulls("none", 300)
    assert 0.65 < light.std() < 1.1
    assert exact.std() > 2.0
    assert np.mean(np.abs(light) > 3) < 0.03 < np.mean(np.abs(exact) > 3)


def test_weighted_fit_matches_the_unweighted_one_for_unit_weights() -> None:
    rng = np.random.default_rng(4)
    signal = rng.random(4000) < 0.5
    scores = np.where(signal, rng.beta(4, 2, 4000), rng.beta(2, 4, 4000))
    s = rng.random(2000) < 0.3
    x = np.where(s, rng.beta(4, 2, 2000), rng.beta(2, 4, 2000))
    plain = fraction_fit(scores, signal, x, s, bins=10)
    weighted = fraction_fit(scores, signal, x, s, 10, np.ones(4000), np.ones(2000))
    assert weighted.fraction == pytest.approx(plain.fraction, abs=1e-6)
    assert weighted.error == pytest.approx(plain.error, rel=1e-4)
    # weights of 2 on the data: sums of weights double, sums of squares quadruple, so the
    # effective counts and the error are those of the unweighted sample (a Poisson fit of the
    # weighted counts, as with template_errors = "none", would shrink it by sqrt(2))
    doubled = fraction_fit(scores, signal, x, s, 10, None, np.full(2000, 2.0))
    assert doubled.fraction == pytest.approx(plain.fraction, abs=1e-4)
    assert doubled.error == pytest.approx(plain.error, rel=1e-3)


def test_fraction_bias_check(folder: Path, same_generator: str) -> None:
    check = [{"type": "fraction_bias", "max_pull": 3.0}]
    shifted = run_with(folder, check).run()[0]
    same = run_with(folder, check, alt=same_generator).run()[0]
    assert abs(same.figures["pull"]) < 3.0 and same.passed
    assert not shifted.passed and abs(shifted.figures["pull"]) > 3.0
    assert "with the templates' statistical uncertainty (da)" in shifted.message()


def test_auc_standard_error_against_bootstrap() -> None:
    rng = np.random.default_rng(2)
    labels = (rng.random(2000) < 0.4).astype(int)
    scores = rng.normal(labels * 1.2, 1.0)
    area = auc(labels, scores)
    n_sig, n_bkg = labels.sum(), (1 - labels).sum()
    boot = []
    for _ in range(300):
        idx = rng.integers(0, len(labels), len(labels))
        boot.append(roc_auc_score(labels[idx], scores[idx]))
    assert auc_standard_error(area, n_sig, n_bkg) == pytest.approx(np.std(boot), rel=0.2)


def test_pareto_of_specs_and_data_mismatch(folder: Path, tmp_path: Path) -> None:
    from robustcheck.pareto import pareto_json, pareto_of_specs, pareto_table

    copy_models(folder, tmp_path)
    paths = []
    for name, model in (
        ("trained", "tagger.pt"),
        ("untrained", "mlp:build"),
        ("exported", "tagger.onnx"),
    ):
        doc = base_spec(model=model)
        if model == "mlp:build":
            del doc["model"]["weights"]  # the factory's random initialisation
        doc["data"]["alternative"] = {"path": "other.npz", "labels": "y", "inputs": {"x": "x"}}
        paths.append(str(write_spec(tmp_path, doc, f"{name}.robust.toml")))
    rows = pareto_of_specs(paths, device="cpu")
    by_spec = {Path(figures.spec).name: (figures, point) for figures, point in rows}
    trained, point = by_spec["trained.robust.toml"]
    untrained, weak = by_spec["untrained.robust.toml"]
    assert trained.auc > untrained.auc
    # the same tagger in two formats ties: both on or both off the front
    assert point.on_front == by_spec["exported.robust.toml"][1].on_front
    for figures, p in rows:  # on the front exactly when nothing dominates it
        better = [
            f
            for f, _ in rows
            if f.auc >= figures.auc
            and f.resilience <= figures.resilience
            and (f.auc > figures.auc or f.resilience < figures.resilience)
        ]
        assert p.on_front == (not better)
    assert len(pareto_table(rows)) == 4
    assert {record["name"] for record in pareto_json(rows)} == {
        "tagger.pt",
        "mlp:build",
        "tagger.onnx",
    }
    doc = base_spec()
    doc["data"]["alternative"] = {"path": "same.npz", "labels": "y", "inputs": {"x": "x"}}
    np.savez(tmp_path / "same.npz", **make_events(3000, seed=3))
    other = str(write_spec(tmp_path, doc, "otherdata.robust.toml"))
    with pytest.raises(SpecError, match=r"\[data.alternative\] is not the same data as in"):
        pareto_of_specs([paths[0], other], device="cpu")
