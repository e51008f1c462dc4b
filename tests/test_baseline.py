"""Release gating against a baseline: regressions, equivalent models, mismatched baselines."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.baseline import Baseline, regression
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


def test_missing_check_and_missing_baseline(gating: Path) -> None:
    path = save_baseline(gating)
    run = run_for(gating, "released.pt", baseline=path)
    renamed = run.spec.checks[0].__class__(0, "renamed", "fooling_rate", run.spec.checks[0].options)
    result = run.run_check(renamed)
    assert "has no check 'renamed'" in result.summary and not result.passed
    with pytest.raises(SpecError, match="no_regression needs a baseline"):
        run_for(gating, "released.pt").run()


def test_two_proportion_regression_against_scipy() -> None:
    from scipy.stats import norm

    def result(k: int, n: int) -> CheckResult:
        return CheckResult(
            "s",
            "c",
            "fooling_rate",
            True,
            "summary",
            figures={"fooling_rate": k / n, "n_fooled": k, "n_events": n},
        )

    old = result(50, 1000).figures
    new = regression(result(80, 1000), old, {})
    pooled = 130 / 2000
    z = (0.08 - 0.05) / np.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert new.figures["regression_significance"] == pytest.approx(z)
    assert new.figures["regression_critical"] == pytest.approx(norm.ppf(0.95))
    assert not new.passed
    assert regression(result(55, 1000), old, {}).passed
    assert regression(result(80, 1000), old, {"regression_tolerance": 0.04}).passed


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
    saved.stdout.fnmatch_lines(["*robustcheck baseline: *baseline.json"])
    assert (pytester.path / "baseline.json").is_file()
    # the released model passes against it; the fragile candidate regresses
    pytester.runpytest_subprocess("--robustcheck").assert_outcomes(passed=1)
    spec["model"]["weights"] = "fragile.pt"
    write_spec(pytester.path, spec)
    result = pytester.runpytest_subprocess("--robustcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression against the baseline: fooling_rate*"])
