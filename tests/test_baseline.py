"""Release gating against a baseline: regressions, equivalent models, mismatched baselines."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.baseline import (
    NUISANCE_GAMMA,
    Baseline,
    exact_worse_pvalue,
    regression,
    restricted_rates,
    score_z,
)
from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.result import CheckResult
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events, train_mlp


@pytest.fixture(scope="module")
def gating(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("gating")
    shutil.copy(model_dir / "mlp.py", folder / "mlp.py")
    events = make_events(4000, seed=11)
    np.savez(folder / "data.npz", **make_events(4000, seed=12))
    np.savez(folder / "other.npz", **make_events(4000, seed=13))
    for name, seed, multiplicity in (
        ("released", 0, True),
        ("retrained", 1, True),
        ("fragile", 0, False),
    ):
        model = train_mlp(events, seed=seed, use_multiplicity=multiplicity, steps=200)
        torch.save(model.state_dict(), folder / f"{name}.pt")
    return folder


def run_for(folder: Path, weights: str, data: str = "data.npz", **kwargs: Any) -> SpecRun:
    doc = base_spec(model="mlp:build", epsilon=2.0)
    doc["model"]["weights"] = weights
    doc["data"]["nominal"]["path"] = data
    doc["checks"] = [
        {
            "name": "fooling",
            "type": "fooling_rate",
            "attack": "pgd",
            "max": 1.0,
            "no_regression": True,
        }
    ]
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu", **kwargs)


def save_baseline(folder: Path) -> Path:
    path = folder / "baseline.json"
    path.unlink(missing_ok=True)
    baseline = Baseline(path)
    result = run_for(folder, "released.pt", record_to=baseline, baseline=path).run()[0]
    assert "baseline.json is being recorded: not compared" in result.message()
    baseline.save()
    return path


def test_regressions_fail_and_equivalent_models_pass(gating: Path) -> None:
    path = save_baseline(gating)
    released = run_for(gating, "released.pt", baseline=path).run()[0]
    assert released.passed and released.figures["regression_difference"] == 0
    retrained = run_for(gating, "retrained.pt", baseline=path).run()[0]
    assert retrained.passed, retrained.message()
    assert "no regression against the baseline: fooling_rate" in retrained.message()
    fragile = run_for(gating, "fragile.pt", baseline=path).run()[0]
    assert fragile.figures["fooling_rate"] > released.figures["fooling_rate"]
    assert not fragile.passed
    assert fragile.summary.startswith("regression against the baseline: fooling_rate")
    assert fragile.figures["regression_significance"] > fragile.figures["regression_critical"]


def test_baseline_on_other_data_is_refused(gating: Path) -> None:
    path = save_baseline(gating)
    result = run_for(gating, "released.pt", data="other.npz", baseline=path).run()[0]
    assert not result.passed
    assert (
        "cannot compare with the baseline: the baseline was made with a different "
        "data.nominal" in result.summary
    )


def test_a_baseline_from_per_batch_random_numbers_is_refused(gating: Path) -> None:
    """A baseline recorded before the per-event random streams has no "random streams"
    fingerprint: its seeded figures differ, so it is refused with the fix."""
    import json

    path = save_baseline(gating)
    doc = json.loads(path.read_text())
    for checks in doc["specs"].values():
        for entry in checks.values():
            assert entry["fingerprints"].pop("random streams") == "event-hash-1"
    path.write_text(json.dumps(doc))
    result = run_for(gating, "released.pt", baseline=path).run()[0]
    assert not result.passed
    assert "random numbers were drawn per batch" in result.summary
    assert "record the baseline again" in result.summary


def test_missing_check_and_missing_baseline(gating: Path) -> None:
    path = save_baseline(gating)
    run = run_for(gating, "released.pt", baseline=path)
    renamed = run.spec.checks[0].__class__(0, "renamed", "fooling_rate", run.spec.checks[0].options)
    result = run.run_check(renamed)
    assert "has no check 'renamed'" in result.summary and not result.passed
    with pytest.raises(SpecError, match="no_regression needs a baseline"):
        run_for(gating, "released.pt").run()


def binomial_result(k: int, n: int) -> CheckResult:
    return CheckResult(
        "s",
        "c",
        "fooling_rate",
        True,
        "summary",
        figures={"fooling_rate": k / n, "n_fooled": k, "n_events": n},
    )


def test_fooling_rate_regression_is_the_exact_test() -> None:
    from scipy.stats import norm

    old = binomial_result(50, 1000).figures
    new = regression(binomial_result(80, 1000), old, {})
    pvalue = exact_worse_pvalue(80, 1000, 50, 1000)
    assert new.figures["regression_pvalue"] == pytest.approx(pvalue)
    assert new.figures["regression_significance"] == pytest.approx(norm.isf(pvalue))
    assert new.figures["regression_critical"] == pytest.approx(norm.ppf(0.95))
    assert not new.passed and "exact test" in new.summary
    assert regression(binomial_result(55, 1000), old, {}).passed
    assert regression(binomial_result(80, 1000), old, {"regression_tolerance": 0.04}).passed
    strict = {"regression_confidence": 1 - pvalue / 2}  # p must fall below half of it now
    assert regression(binomial_result(80, 1000), old, strict).passed


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"),
    [(5, 30, 1, 50), (12, 60, 5, 60), (3, 20, 0, 25), (0, 40, 0, 40), (9, 45, 14, 45)],
)
def test_exact_test_is_barnards_test(k1: int, n1: int, k2: int, n2: int) -> None:
    """Without the Berger-Boos restriction the test is Barnard's exact test (pooled z);
    with it, the p-value is at most Barnard's plus the 0.001 it adds."""
    from scipy.stats import barnard_exact

    table = [[k1, k2], [n1 - k1, n2 - k2]]
    expected = barnard_exact(table, alternative="greater", pooled=True).pvalue
    assert exact_worse_pvalue(k1, n1, k2, n2, gamma=0.0) == pytest.approx(expected, rel=1e-6)
    restricted = exact_worse_pvalue(k1, n1, k2, n2)
    assert NUISANCE_GAMMA <= restricted <= expected + NUISANCE_GAMMA + 1e-9


def brute_force_pvalue(k1: int, n1: int, k2: int, n2: int, tolerance: float) -> float:
    """Every table, its score z, and the largest probability of the extreme ones over a fine
    grid of the old rate at new = old + tolerance."""
    from scipy.stats import binom

    z = score_z(np.arange(n1 + 1)[:, None], n1, np.arange(n2 + 1)[None, :], n2, tolerance)
    extreme = z >= float(score_z(k1, n1, k2, n2, tolerance)) - 1e-9
    best = 0.0
    for rate in np.linspace(0.0, 1.0, 4001):
        pmf1 = binom.pmf(np.arange(n1 + 1), n1, min(rate + tolerance, 1.0))
        pmf2 = binom.pmf(np.arange(n2 + 1), n2, rate)
        best = max(best, float((pmf1[:, None] * pmf2[None, :] * extreme).sum()))
    return best


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2", "tolerance"),
    [(6, 25, 1, 30, 0.05), (10, 40, 3, 35, 0.1), (2, 20, 2, 20, 0.02)],
)
def test_exact_test_with_a_tolerance_against_enumeration(
    k1: int, n1: int, k2: int, n2: int, tolerance: float
) -> None:
    from scipy.optimize import minimize_scalar
    from scipy.stats import binom

    expected = brute_force_pvalue(k1, n1, k2, n2, tolerance)
    assert exact_worse_pvalue(k1, n1, k2, n2, tolerance, gamma=0.0) == pytest.approx(
        expected, rel=1e-4, abs=1e-9
    )
    # the score's rates: the largest likelihood with new - old = tolerance
    r1, r2 = restricted_rates(k1 / n1, n1, k2 / n2, n2, tolerance)
    assert float(r1 - r2) == pytest.approx(tolerance)

    def loss(rate: float) -> float:
        return -float(binom.logpmf(k1, n1, rate + tolerance) + binom.logpmf(k2, n2, rate))

    found = minimize_scalar(
        loss, bounds=(0, 1 - tolerance), method="bounded", options={"xatol": 1e-10}
    )
    assert loss(float(r2)) <= found.fun + 1e-9


def test_score_z_rises_with_the_new_count_and_falls_with_the_old() -> None:
    """What makes the region of extreme tables monotone, so the largest probability under the
    null lies on its boundary."""
    for n1, n2, tolerance in ((30, 30, 0.0), (50, 20, 0.0), (40, 90, 0.03), (25, 25, 0.2)):
        z = score_z(np.arange(n1 + 1)[:, None], n1, np.arange(n2 + 1)[None, :], n2, tolerance)
        assert (np.diff(z, axis=0) >= -1e-12).all() and (np.diff(z, axis=1) <= 1e-12).all()


def false_alarm_rates(
    n: int, rate: float, tolerance: float, repeats: int, seed: int
) -> tuple[float, float]:
    """Seeded simulation of baselines and candidates whose true fooling rates differ by exactly
    the tolerance: how often the exact test, and the pooled z-test used before, call it a
    regression at 95%. Each distinct table is tested once."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    new = rng.binomial(n, rate + tolerance, repeats)
    old = rng.binomial(n, rate, repeats)
    tables, index = np.unique(np.stack([new, old], axis=1), axis=0, return_inverse=True)
    pvalues = np.array([exact_worse_pvalue(int(a), n, int(b), n, tolerance) for a, b in tables])
    exact = float(np.mean(pvalues[index.ravel()] < 0.05))
    pooled = (new + old) / (2 * n)
    error = np.sqrt(pooled * (1 - pooled) * 2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(error > 0, (new - old) / n / error - tolerance / error, 0.0)
    return exact, float(np.mean(z > norm.ppf(0.95)))


def test_false_alarm_rate_at_small_counts_holds_the_stated_confidence() -> None:
    repeats = 20_000
    margin = 3 * np.sqrt(0.05 * 0.95 / repeats)  # three Monte Carlo standard deviations
    exact, z_test = false_alarm_rates(100, 0.05, 0.0, repeats, seed=1)
    assert exact <= 0.05 + margin
    assert z_test > 0.05 + margin  # what the pooled z-test did: 5.7% at 100 events, p = 0.05
    exact, _ = false_alarm_rates(100, 0.05, 0.02, repeats, seed=2)
    assert exact <= 0.05 + margin


def test_pytest_flags_save_and_compare(pytester: pytest.Pytester, gating: Path) -> None:
    for name in ("mlp.py", "data.npz", "released.pt", "fragile.pt"):
        shutil.copy(gating / name, pytester.path / name)
    from tests.conftest import write_spec

    spec = base_spec(model="mlp:build", epsilon=2.0)
    spec["model"]["weights"] = "released.pt"
    spec["checks"] = [
        {
            "name": "fooling",
            "type": "fooling_rate",
            "attack": "pgd",
            "max": 1.0,
            "no_regression": True,
        }
    ]
    spec["baseline"] = "baseline.json"
    write_spec(pytester.path, spec)
    saved = pytester.runpytest_subprocess(
        "--robustcheck", "--robustcheck-save-baseline", "baseline.json", "-v"
    )
    # recording the baseline the spec compares with: no comparison this time
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(["*robustcheck baseline: *baseline.json (1 entry written)"])
    assert (pytester.path / "baseline.json").is_file()
    # the released model passes against it; the fragile candidate regresses
    pytester.runpytest_subprocess("--robustcheck").assert_outcomes(passed=1)
    spec["model"]["weights"] = "fragile.pt"
    write_spec(pytester.path, spec)
    result = pytester.runpytest_subprocess("--robustcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression against the baseline: fooling_rate*"])
