"""min_epsilon (per-event robustness radii), the robust_radius check, fooling_rate's epsilon,
the per-event output path of the engine and the report's radius plots."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, quantile_test

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.attacks.min_epsilon import RADIUS, ScaledBox, event_radii, sigma_norm
from robustcheck.checks.robust_radius import quantile_interval
from robustcheck.core import SpecRun
from robustcheck.decision import Decision
from robustcheck.engine import run_attack
from robustcheck.envelope import Envelope, Inputs
from robustcheck.errors import SpecError
from robustcheck.event_random import EventRandom
from robustcheck.spec import parse_spec
from robustcheck.stats import clopper_pearson
from tests.conftest import base_spec

MAX_EPSILON = 2.0
STEPS = 10
RADIUS_ATTACK = {"method": "min_epsilon", "max_epsilon": MAX_EPSILON, "steps": STEPS, "seed": 7}


def spec_doc(checks: list[dict[str, Any]] | None = None, **attack: Any) -> dict[str, Any]:
    doc = base_spec()
    doc["attacks"]["radius"] = {**RADIUS_ATTACK, **attack}
    doc["attacks"]["apgd"] = {"method": "apgd", "epsilon": 1.0, "steps": STEPS, "seed": 7}
    doc["checks"] = checks or [{"type": "robust_radius", "attack": "radius", "min": 0.5}]
    return doc


def make_run(folder: Path, doc: dict[str, Any]) -> SpecRun:
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.fixture(scope="module")
def radius_run(model_dir: Path) -> SpecRun:
    return make_run(model_dir, spec_doc())


@pytest.fixture(scope="module")
def apgd_radius_run(model_dir: Path) -> SpecRun:
    return make_run(model_dir, spec_doc(probe="apgd"))


# --- the attack ------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.3, 0.7, 1.3, MAX_EPSILON])
@pytest.mark.parametrize("probe", ["pgd", "apgd"])
def test_curve_agrees_with_pgd_runs_at_fixed_epsilons(
    radius_run: SpecRun, apgd_radius_run: SpecRun, probe: str, epsilon: float
) -> None:
    """PGD with early stop at epsilon e fools an event iff one of its STEPS + 1 points (the
    random start and each step, the last checked by the fooling rate) fools it; each probe of
    min_epsilon is that PGD (same steps, step size 2.5 e / steps, random start) at the event's
    own e, so radius <= e and "PGD at e fools it" differ only by chance (other random starts)
    and the bisection's resolution. The same for APGD (``probe = "apgd"``). Tolerance: the
    events on which the two disagree split evenly both ways (exact McNemar sign test,
    p >= 0.01), and both rates lie in each other's 95% Clopper-Pearson interval."""
    run = radius_run if probe == "pgd" else apgd_radius_run
    radii = event_radii(run.adversaries("radius"))
    pgd = run.adversaries(probe, epsilon=epsilon)
    pgd_fooled = pgd.fooled.numpy()[pgd.correct.numpy()]
    curve_fooled = radii <= epsilon
    n, k_curve, k_pgd = len(radii), int(curve_fooled.sum()), int(pgd_fooled.sum())
    assert n == int(pgd.correct.sum()) > 2000
    assert k_pgd > 10  # the comparison has events to compare
    only_curve = int((curve_fooled & ~pgd_fooled).sum())
    only_pgd = int((pgd_fooled & ~curve_fooled).sum())
    if only_curve + only_pgd:
        assert binomtest(only_curve, only_curve + only_pgd).pvalue >= 0.01
    for k, other in ((k_curve, k_pgd), (k_pgd, k_curve)):
        low, high = clopper_pearson(k, n)
        assert low <= other / n <= high
    if epsilon == MAX_EPSILON:  # the first probe is PGD at max_epsilon with the same seed
        assert only_curve + only_pgd <= 2  # the same random numbers; float rounding only


@pytest.mark.parametrize("probe", ["pgd", "apgd"])
def test_each_probe_is_that_attack_at_the_events_epsilon(
    radius_run: SpecRun, apgd_radius_run: SpecRun, probe: str
) -> None:
    """The same random start and steps as method pgd (apgd) at that epsilon, point for point."""
    run = radius_run if probe == "pgd" else apgd_radius_run
    inputs, labels = run.inputs()
    nominal = {name: x[:256] for name, x in inputs.items()}
    decision = Decision(1)

    def batch(epsilon: float) -> AttackBatch:
        return AttackBatch(
            run.tagger,
            nominal,
            decision.target(labels[:256]),
            run.envelope.box(nominal, epsilon),
            decision,
            EventRandom.of(11, "test", torch.arange(256)),
        )

    attack = run.make_attack("radius")
    with run.tagger.frozen():
        for epsilon in (0.3, 1.3):
            other = run.make_attack(probe, epsilon=epsilon)
            every = torch.full((256,), epsilon, dtype=torch.float64)
            ours, fooled = attack.probe(batch(MAX_EPSILON), every)
            theirs = other.perturb(batch(epsilon))
            assert torch.allclose(ours["x"], theirs["x"], rtol=1e-5, atol=1e-4)
            assert torch.equal(fooled, batch(epsilon).fooled(theirs))


def test_radii_lie_in_the_box_and_their_points_fool(radius_run: SpecRun) -> None:
    adv = radius_run.adversaries("radius")
    recorded = adv.per_event[RADIUS].numpy()
    correct, fooled = adv.correct.numpy(), adv.fooled.numpy()
    assert np.isnan(recorded[~correct]).all()  # not attacked: no radius
    radii = event_radii(adv)
    finite = radii[np.isfinite(radii)]
    assert len(finite) == int(fooled.sum()) > 50
    assert (finite > 0).all() and (finite <= MAX_EPSILON).all()
    assert np.isposinf(radii).sum() == int(correct.sum() - fooled.sum())  # censored
    # the radius is the sigma-norm of the returned point, which fools the tagger
    box = radius_run.envelope.box(adv.nominal, MAX_EPSILON)
    norm = sigma_norm(box, adv.adversarial).double().numpy()
    assert np.allclose(norm[fooled], recorded[fooled], atol=1e-5)
    x0, x1 = adv.nominal["x"].numpy(), adv.adversarial["x"].numpy()
    assert (x1[:, 3] == x0[:, 3]).all()  # n_const is frozen
    assert (np.abs(x1[:, 2]) <= 2.5).all()  # jet_eta's bounds
    # more bisections only refine the radii: the first probe, so the fooled events, is the same
    finer = make_run(radius_run.spec.base_dir, spec_doc(bisections=12))
    radii_fine = event_radii(finer.adversaries("radius"))
    assert np.array_equal(np.isfinite(radii_fine), np.isfinite(radii))


def test_scaled_box_is_each_events_own_box_with_ellipsoids(model_dir: Path) -> None:
    """A ScaledBox at radius r_i projects like the box of epsilon r_i, per event, also for a
    correlated group (its Mahalanobis ball)."""
    doc = spec_doc()
    envelope = doc["envelope"]["x"]
    envelope["jet_pt"] = {"absolute": 10.0, "min": 0.0}
    envelope["groups"] = [
        {"name": "pt_eta", "features": ["jet_pt", "jet_eta"], "correlation": [[1, 0.7], [0.7, 1]]}
    ]
    env = Envelope.from_spec(parse_spec(doc, model_dir / "robustness.toml"))
    events = np.load(model_dir / "data.npz")["x"][:64]
    nominal = {"x": torch.from_numpy(events)}
    generator = torch.Generator().manual_seed(3)
    radius = torch.rand(64, generator=generator, dtype=torch.float64) * 1.8 + 0.1
    scaled = ScaledBox.around(env.box(nominal, MAX_EPSILON), radius)
    points = nominal["x"] + torch.randn(64, 4, generator=generator) * torch.tensor(
        [40.0, 20.0, 0.3, 3.0]
    )
    ours = {"x": points.clone()}
    scaled.project_(ours)
    for i in range(64):
        own = env.box({"x": nominal["x"][i : i + 1]}, float(radius[i]))
        theirs = {"x": points[i : i + 1].clone()}
        own.project_(theirs)
        assert torch.allclose(ours["x"][i], theirs["x"][0], rtol=1e-5, atol=1e-4)
    (ellipsoid,) = env.inputs["x"].ellipsoids
    length = ellipsoid.mahalanobis2(ours["x"] - nominal["x"]).sqrt()
    assert (length <= radius * (1 + 1e-5)).all()
    assert (length > radius * 0.99).any()  # the ball bound, not only the box
    sub = scaled.subset(torch.tensor([3, 5]))
    assert torch.equal(sub.radius, radius[[3, 5]])


def test_min_epsilon_runs_with_a_correlated_group_and_in_chunks(model_copy: Path) -> None:
    doc = spec_doc()
    doc["envelope"]["x"]["jet_pt"] = {"absolute": 10.0, "min": 0.0}
    doc["envelope"]["x"]["groups"] = [
        {"name": "pt_eta", "features": ["jet_pt", "jet_eta"], "correlation": [[1, 0.7], [0.7, 1]]}
    ]
    doc["data"]["nominal"]["chunk_size"] = 1000
    run = make_run(model_copy, doc)
    adv = run.adversaries("radius")
    radii = event_radii(adv)
    assert len(radii) == int(adv.correct.sum()) and np.isfinite(radii).sum() > 10
    assert np.nanmax(radii[np.isfinite(radii)]) <= MAX_EPSILON
    (ellipsoid,) = run.envelope.inputs["x"].ellipsoids
    fooled = adv.fooled.numpy()
    length = ellipsoid.mahalanobis2(adv.adversarial["x"] - adv.nominal["x"]).sqrt().numpy()
    assert (length[fooled] <= adv.per_event[RADIUS].numpy()[fooled] + 1e-4).all()


class RecordFirstFeature(Attack):
    """Records each event's first feature: which rows the engine maps the values to."""

    needs_gradients = False

    def perturb(self, batch: AttackBatch) -> Inputs:
        batch.record("first", batch.nominal["x"][:, 0])
        return {name: x.clone() for name, x in batch.nominal.items() if name in batch.box.unit}


def test_engine_collects_per_event_outputs_row_by_row(radius_run: SpecRun) -> None:
    inputs, labels = radius_run.inputs()
    select = torch.zeros(len(labels), dtype=torch.bool)
    select[::3] = True
    attack = RecordFirstFeature(radius_run.spec.attacks["pgd"], 0)
    outcome = run_attack(
        attack,
        radius_run.tagger,
        radius_run.envelope,
        inputs,
        labels,
        Decision(1),
        select,
        batch_size=97,  # many batches, the last one short
    )
    first = outcome.per_event["first"]
    assert torch.allclose(first[select], inputs["x"][select, 0].double())
    assert torch.isnan(first[~select]).all()
    three = {name: x[:3] for name, x in inputs.items()}
    box = radius_run.envelope.box(three, 1.0)
    streams = EventRandom.of(0, "test", torch.arange(3))
    batch = AttackBatch(radius_run.tagger, three, labels[:3], box, Decision(1), streams)
    with pytest.raises(ValueError, match="values for"):
        batch.record("first", torch.zeros(2))


# --- the robust_radius check -----------------------------------------------------------------


def run_check(folder: Path, check: dict[str, Any]):
    run = make_run(folder, spec_doc([check]))
    return run.run_check(run.spec.checks[0])


def test_robust_radius_passes_and_fails_where_it_should(model_dir: Path) -> None:
    check = {"type": "robust_radius", "attack": "radius", "quantile": 0.02}
    loose = run_check(model_dir, {**check, "min": 0.05})
    f = loose.figures
    assert loose.passed and f["quantile_low"] > 0.05 and "> min 0.05" in loose.summary
    # at the lower end of the quantile's interval: fails; just below it: passes
    assert not run_check(model_dir, {**check, "min": f["quantile_low"]}).passed
    assert run_check(model_dir, {**check, "min": f["quantile_low"] - 1e-6}).passed
    strict = run_check(model_dir, {**check, "min": MAX_EPSILON})
    assert not strict.passed and "<= min 2" in strict.summary
    # the rule is fooling_rate's within min: the Clopper-Pearson upper limit <= quantile
    for result in (loose, strict):
        g = result.figures
        assert (g["ci_high"] <= g["quantile"]) == result.passed
        assert g["n_fooled"] == round(g["fraction_within_min"] * g["n_events"])
        (comparison,) = result.comparisons()
        assert comparison.holds == result.passed
    assert loose.headline()[1] == "lower limit > 0.05"


@pytest.mark.parametrize("minimum", [0.3, 0.5, 1.0])
def test_robust_radius_decides_as_fooling_rate_at_epsilon_min(
    model_dir: Path, minimum: float
) -> None:
    checks = [
        {"type": "robust_radius", "attack": "radius", "min": minimum, "quantile": 0.02},
        {"type": "fooling_rate", "attack": "radius", "epsilon": minimum, "max": 0.02},
    ]
    run = make_run(model_dir, spec_doc(checks))
    radius, rate = (run.run_check(c) for c in run.spec.checks)
    assert radius.figures["n_fooled"] == rate.figures["n_fooled"]
    assert radius.figures["ci_high"] == rate.figures["ci_high"]
    assert radius.passed == rate.passed


def test_robust_radius_quantile_of_censored_radii_reads_beyond_max_epsilon(
    model_dir: Path,
) -> None:
    """With the median (most events are never fooled) the quantile is censored: reported as
    beyond max_epsilon, its lower limit max_epsilon, and the check passes up to it."""
    result = run_check(
        model_dir, {"type": "robust_radius", "attack": "radius", "quantile": 0.5, "min": 2.0}
    )
    assert result.passed
    assert result.figures["radius_quantile"] is None and result.figures["quantile_high"] is None
    assert result.figures["quantile_low"] == MAX_EPSILON
    assert "quantile > 2 sigma" in result.summary
    assert result.figures["n_censored"] > result.figures["n_events"] / 2


@pytest.mark.parametrize("n", [1, 2, 7, 20, 59, 60, 300, 2876])
@pytest.mark.parametrize("quantile", [0.01, 0.05, 0.5, 0.9])
def test_quantile_interval_matches_scipy(n: int, quantile: float) -> None:
    x = np.random.default_rng(n).exponential(size=n)
    estimate, low, high = quantile_interval(x, quantile, 0.95)
    ci = quantile_test(x, p=quantile).confidence_interval(0.95)
    # scipy gives NaN for an end the sample is too small for; we give -inf / +inf
    assert low == ci.low if not np.isnan(ci.low) else low == -math.inf
    assert high == ci.high if not np.isnan(ci.high) else high == math.inf
    assert estimate == np.quantile(x, quantile, method="inverted_cdf")


def test_quantile_rule_is_the_clopper_pearson_rule() -> None:
    """low > min exactly when the upper limit of the share within min is <= quantile."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(1, 400))
        radii = np.where(rng.random(n) < 0.3, np.inf, np.round(rng.exponential(size=n), 2))
        quantile = float(rng.choice([0.01, 0.05, 0.1, 0.5]))
        limit = float(rng.choice([0.05, 0.2, 0.5, 1.0]))
        _, low, _ = quantile_interval(radii, quantile)
        k = int((radii <= limit).sum())
        checked += (max(low, 0.0) > limit) != (clopper_pearson(k, n)[1] <= quantile)
    assert checked == 0


def test_fooling_rate_reads_the_curve_at_epsilon(radius_run: SpecRun, model_dir: Path) -> None:
    checks = [
        {"name": "at 1", "type": "fooling_rate", "attack": "radius", "max": 1.0, "epsilon": 1.0},
        {"name": "at max", "type": "fooling_rate", "attack": "radius", "max": 1.0},
    ]
    run = make_run(model_dir, spec_doc(checks))
    at_one, at_max = (run.run_check(c) for c in run.spec.checks)
    radii = event_radii(run.adversaries("radius"))
    assert at_one.figures["n_fooled"] == int((radii <= 1.0).sum()) > 0
    assert at_one.figures["epsilon"] == 1.0 and "curve read at eps=1 sigma" in at_one.summary
    assert at_max.figures["n_fooled"] == int(np.isfinite(radii).sum()) > at_one.figures["n_fooled"]
    assert at_max.figures["epsilon"] == MAX_EPSILON


# --- spec errors -----------------------------------------------------------------------------


def test_min_epsilon_refuses_an_epsilon_override(radius_run: SpecRun) -> None:
    with pytest.raises(SpecError, match="runs at no other"):
        radius_run.adversaries("radius", epsilon=1.0)


def test_gradient_masking_check_on_min_epsilon_is_skipped_with_a_reason(model_dir: Path) -> None:
    checks = [
        {
            "type": "fooling_rate",
            "attack": "radius",
            "max": 1.0,
            "epsilon": 1.0,
            "gradient_masking_check": True,
        }
    ]
    run = make_run(model_dir, spec_doc(checks))
    result = run.run_check(run.spec.checks[0])
    assert result.passed
    assert any("gradient-masking check skipped: min_epsilon" in line for line in result.details)


def spec_error(folder: Path, doc: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(doc, folder / "robustness.toml")
    return info.value


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (lambda d: d["attacks"]["radius"].update(epsilon=1.0), "attacks.radius.epsilon", "max_e"),
        (lambda d: d["attacks"]["radius"].update(scan=[0.5]), "attacks.radius.scan", "one run"),
        (lambda d: d["attacks"]["radius"].pop("max_epsilon"), "attacks.radius", "max_epsilon"),
        (lambda d: d["checks"][0].update(attack="pgd"), "checks[0].attack", "is pgd"),
        (lambda d: d["checks"][0].update(min=2.5), "checks[0].min", "beyond the max_epsilon"),
        (lambda d: d["checks"][0].pop("min"), "checks[0]", "min"),
        (lambda d: d["checks"][0].update(quantile=0.0), "checks[0].quantile", "quantile"),
        (
            lambda d: d["checks"].append(
                {"type": "fooling_rate", "attack": "pgd", "max": 0.1, "epsilon": 0.5}
            ),
            "checks[1].epsilon",
            "is pgd",
        ),
        (
            lambda d: d["checks"].append(
                {"type": "fooling_rate", "attack": "radius", "max": 0.1, "epsilon": 3.0}
            ),
            "checks[1].epsilon",
            "raise attacks.radius.max_epsilon",
        ),
    ],
)
def test_spec_errors_name_the_field(model_dir: Path, change: Any, field: str, text: str) -> None:
    doc = copy.deepcopy(spec_doc())
    change(doc)
    error = spec_error(model_dir, doc)
    assert error.field is not None and error.field.startswith(field)
    assert text in str(error)


# --- report ----------------------------------------------------------------------------------


def test_report_draws_the_radius_distribution_and_curve(radius_run: SpecRun) -> None:
    pytest.importorskip("matplotlib")
    from robustcheck.report import writer
    from robustcheck.report.data import radius_data

    data = radius_data(radius_run.adversaries("radius"))
    assert data is not None and radius_data(radius_run.adversaries("pgd")) is None
    radii = event_radii(radius_run.adversaries("radius"))
    assert sum(data["counts"]) + data["n_censored"] == data["n_events"] == len(radii)
    last = data["curve"][-1]
    assert last["epsilon"] == MAX_EPSILON and last["n_fooled"] == np.isfinite(radii).sum()
    spec = {
        "checks": [
            {"type": "robust_radius", "attack_name": "radius", "options": {"min": 0.5}},
            {"type": "fooling_rate", "attack_name": "radius", "options": {"max": 0.05}},
        ]
    }
    drawn = writer.radius_plots(spec, "radius", data, "plots/x")
    assert [plot.kind for plot, _ in drawn] == ["radius", "scan"]
    for _, draw in drawn:
        assert draw()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robust_radius_regression_compares_the_share_within_min(model_dir: Path) -> None:
    from robustcheck.baseline import regression

    check = {"type": "robust_radius", "attack": "radius", "min": 1.0, "quantile": 0.2}
    result = run_check(model_dir, check)
    same = regression(copy.deepcopy(result), dict(result.figures), {})
    assert same.passed and same.figures["regression_difference"] == 0
    better = {**result.figures, "n_fooled": 0, "fraction_within_min": 0.0}
    worse = regression(copy.deepcopy(result), better, {})
    assert not worse.passed and "fraction_within_min" in worse.summary


# --- discrete features -----------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.4, 1.0, 1.7, 2.5])
def test_scaled_box_of_discrete_entries_is_the_box_at_that_epsilon(epsilon: float) -> None:
    """Integer entries within floor(epsilon * sigma) whole units, categorical swaps from
    epsilon 1 on: the ScaledBox shrunk from max_epsilon 3 is Envelope.box at epsilon."""
    from tests import test_discrete as discrete

    env = discrete.envelope()
    nominal, _ = discrete.sample(200)
    full = torch.full((200,), epsilon, dtype=torch.float64)
    scaled = ScaledBox.around(env.box(nominal, 3.0), full)
    own = env.box(nominal, epsilon)
    for name in own.unit:
        assert torch.equal(scaled.lower[name], own.lower[name])
        assert torch.equal(scaled.upper[name], own.upper[name])
        assert torch.allclose(scaled.unit[name], own.unit[name] * epsilon)


def test_min_epsilon_keeps_discrete_entries_on_their_lattice() -> None:
    from robustcheck import registry
    from robustcheck.spec import AttackSpec
    from robustcheck.taggers.torch_module import wrap_module
    from tests import test_discrete as discrete

    env = discrete.envelope()
    nominal, labels = discrete.sample(300)
    options = registry.attack_options(
        "min_epsilon", {"max_epsilon": 3.0, "seed": 5}, "attacks.t", "test"
    )
    attack = registry.attacks()["min_epsilon"].load()(AttackSpec("t", "min_epsilon", options), 5)
    model = discrete.Recorder()
    tagger = wrap_module(model, "test", input_names=["jets", "parts", "mask"])
    tagger.bind(list(nominal))
    decision = Decision(1)
    with tagger.frozen():
        batch = AttackBatch(
            tagger,
            nominal,
            decision.target(labels),
            env.box(nominal, 3.0),
            decision,
            EventRandom.of(11, "test", torch.arange(len(labels))),
        )
        adv = {**nominal, **attack.perturb(batch)}
    for jets, parts in model.seen:  # every point the attack evaluated
        discrete.assert_on_lattice(jets, parts)
    radius = batch.outputs[RADIUS]
    fooled = torch.isfinite(radius)
    assert int(fooled.sum()) > 20
    moved_n = (adv["jets"][:, 1] - nominal["jets"][:, 1]).abs()
    assert (moved_n[fooled] <= torch.floor(radius[fooled] + 1e-4)).all()  # sigma of n is 1
    assert (moved_n[fooled] > 0).any()
    swapped = (adv["parts"][..., 1] != nominal["parts"][..., 1]).any(-1)
    assert (radius[swapped & fooled] >= 1.0).all()  # a swap needs epsilon 1
    norm = sigma_norm(env.box(nominal, 3.0), {k: adv[k] for k in ("jets", "parts")})
    assert torch.allclose(norm[fooled].double(), radius[fooled], atol=1e-5)
