"""The fooling-rate check and its Clopper-Pearson interval."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import binom

from robustcheck.core import SpecRun
from robustcheck.spec import parse_spec
from robustcheck.stats import clopper_pearson
from tests.conftest import base_spec


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (132, 1000), (1, 4812)])
def test_clopper_pearson_inverts_the_binomial(k: int, n: int) -> None:
    low, high = clopper_pearson(k, n, 0.95)
    assert 0 <= low <= k / n <= high <= 1
    if k < n:  # at the upper limit, seeing k or fewer has probability 2.5%
        assert binom.cdf(k, n, high) == pytest.approx(0.025, rel=1e-6)
    if k > 0:  # at the lower limit, seeing k or more has probability 2.5%
        assert binom.sf(k - 1, n, low) == pytest.approx(0.025, rel=1e-6)
    with pytest.raises(ValueError):
        clopper_pearson(5, 0)


def check(model_dir: Path, limit: float):
    doc = base_spec()
    doc["checks"][0]["max"] = limit
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    return run.run_check(run.spec.checks[0])


def test_max_zero_fails_and_max_one_passes(model_dir: Path) -> None:
    failing, passing = check(model_dir, 0.0), check(model_dir, 1.0)
    assert not failing.passed and passing.passed
    assert failing.figures["fooling_rate"] == passing.figures["fooling_rate"] > 0
    assert "> max 0" in failing.summary and "<= max 1" in passing.summary


def test_threshold_compares_the_upper_limit(model_dir: Path) -> None:
    result = check(model_dir, 1.0)
    rate, high = result.figures["fooling_rate"], result.figures["ci_high"]
    assert rate < high
    between = (rate + high) / 2  # the rate is below it, its upper limit is not
    assert not check(model_dir, between).passed
    assert check(model_dir, high + 1e-9).passed
