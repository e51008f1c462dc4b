"""Particle-level taggers: several named inputs in every backend, padding that no attack
touches, the mask never perturbed, coherent shifts, and the same results in every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.core import Adversaries, SpecRun
from robustcheck.errors import SpecError
from robustcheck.invariance_stats import measure
from robustcheck.spec import parse_spec
from tests import particle_fixtures
from tests.particle_fixtures import (
    PAD_VALUE,
    PARTICLE_FEATURES,
    make_particles,
    model_paths,
    particle_spec,
    write_window_model,
)

# the fixtures, for this module
particle_dir = particle_fixtures.particle_dir

REL = 0.05  # the jet energy scale group's relative sigma
JES = [{"name": "jes", "features": ["pt"], "coherent": True, "relative": REL}]
JET_JES = [{"name": "jes", "features": ["jet_pt"], "coherent": True, "relative": REL}]

ATTACKS: dict[str, dict[str, Any]] = {
    "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 10, "seed": 5},
    "fgsm": {"method": "fgsm", "epsilon": 1.0},
    "constrained_pgd": {
        "method": "constrained_pgd",
        "epsilon": 1.0,
        "steps": 10,
        "lambda_chi2": 0.01,
        "seed": 5,
    },
    "worst": {"method": "shift", "epsilon": 1.0, "seed": 5},
    "up": {"method": "shift", "epsilon": 1.0, "mode": "up"},
    "down": {"method": "shift", "epsilon": 1.0, "mode": "down"},
}


def make_run(
    folder: Path, model: str, with_jet: bool, reverse_inputs: bool = False, **kwargs: Any
) -> SpecRun:
    """A run of the particle spec with the JES groups; ``reverse_inputs`` lists the data's
    inputs in the opposite order of the model's forward arguments."""
    doc = particle_spec(
        model,
        with_jet=with_jet,
        groups=kwargs.pop("groups", JES),
        jet_groups=kwargs.pop("jet_groups", JET_JES if with_jet else None),
        **kwargs,
    )
    if reverse_inputs:
        inputs = doc["data"]["nominal"]["inputs"]
        doc["data"]["nominal"]["inputs"] = dict(reversed(list(inputs.items())))
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def assert_padding_and_mask_untouched(adv: Adversaries) -> None:
    """Padded entries bit for bit as read, the mask input never perturbed, and movement."""
    parts, moved = adv.nominal["parts"], adv.adversarial["parts"]
    padding = adv.nominal["mask"] == 0
    assert bool(padding.any()) and bool((parts[padding] == PAD_VALUE).all())
    assert torch.equal(moved[padding].view(torch.int32), parts[padding].view(torch.int32))
    assert adv.adversarial["mask"] is adv.nominal["mask"]
    assert torch.equal(adv.nominal["mask"].unique(), torch.tensor([0.0, 1.0]))
    changed = [
        name for name in adv.features if not torch.equal(adv.adversarial[name], adv.nominal[name])
    ]
    assert changed, "the attack moved nothing, so the padding check proves nothing"


@pytest.mark.parametrize("with_jet", [False, True], ids=["parts+mask", "parts+mask+jet"])
def test_every_format_binds_by_name_and_agrees(particle_dir: Path, with_jet: bool) -> None:
    """Same scores, same fooled events for the same seed, padding untouched, in every format.

    The spec lists the inputs in reverse order: each backend must bind them by name.
    """
    attacks = {name: ATTACKS[name] for name in ("pgd", "worst")}
    reference: torch.Tensor | None = None
    outcomes = {}
    for model in model_paths(with_jet):
        run = make_run(particle_dir, model, with_jet, reverse_inputs=True, attacks=attacks)
        assert list(run.spec.data["nominal"].inputs)[0] == ("jet" if with_jet else "mask")
        expected = ("parts", "mask", "jet") if with_jet else ("parts", "mask")
        assert run.tagger.binding == expected
        probs = run.log_probs().exp()
        if reference is None:
            reference = probs
        assert torch.allclose(probs, reference, atol=1e-5), model
        fooled = []
        for name in attacks:
            adv = run.adversaries(name)
            assert_padding_and_mask_untouched(adv)
            fooled.append(adv.fooled)
        outcomes[model] = fooled
    first = outcomes[model_paths(with_jet)[0]]
    assert all(f.any() for f in first)
    for model, fooled in outcomes.items():
        assert all(torch.equal(a, b) for a, b in zip(fooled, first, strict=True)), model


def test_input_order_in_the_spec_does_not_matter(particle_dir: Path) -> None:
    shuffled = make_run(particle_dir, "pfn_jet.onnx", True, reverse_inputs=True)
    ordered = make_run(particle_dir, "pfn_jet.onnx", True)
    assert shuffled.tagger.binding == ordered.tagger.binding == ("parts", "mask", "jet")
    assert torch.equal(shuffled.log_probs(), ordered.log_probs())


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("with_jet", [False, True], ids=["parts+mask", "parts+mask+jet"])
def test_padding_is_unchanged_after_every_attack(
    particle_dir: Path, attack: str, with_jet: bool
) -> None:
    run = make_run(
        particle_dir, model_paths(with_jet)[1], with_jet, attacks={attack: ATTACKS[attack]}
    )
    adv = run.adversaries(attack)
    assert_padding_and_mask_untouched(adv)
    # events misclassified at nominal are not attacked
    for name in adv.features:
        assert torch.equal(adv.adversarial[name][~adv.correct], adv.nominal[name][~adv.correct])


def pt_ratios(adv: Adversaries) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial / nominal pt of every constituent (events, particles), and which ones are
    real constituents of attacked events."""
    real = (adv.nominal["mask"] > 0) & adv.correct.unsqueeze(1)
    ratio = (adv.adversarial["parts"][..., 0] / adv.nominal["parts"][..., 0]).double()
    return ratio, real


@pytest.mark.parametrize("mode", ["worst", "up", "down"])
def test_coherent_shift_moves_every_constituent_by_one_factor(
    particle_dir: Path, mode: str
) -> None:
    epsilon = 1.5
    attack = {"method": "shift", "epsilon": epsilon, "mode": mode, "seed": 2}
    run = make_run(particle_dir, "pfn_jet.pt", True, attacks={"jes": attack})
    adv = run.adversaries("jes")
    ratio, real = pt_ratios(adv)
    largest = torch.where(real, ratio, -torch.inf).amax(1)
    smallest = torch.where(real, ratio, torch.inf).amin(1)
    attacked = adv.correct
    assert float((largest - smallest)[attacked].max()) < 1e-6  # one factor per event
    assert float((ratio[real] - 1).abs().max()) <= epsilon * REL + 1e-6
    # non-group features never move in this attack
    for column in (1, 2):
        assert torch.equal(adv.adversarial["parts"][..., column], adv.nominal["parts"][..., column])
    assert torch.equal(adv.adversarial["jet"][:, 1], adv.nominal["jet"][:, 1])
    # the jet pt of the same-named group moves by the constituents' factor
    jet_ratio = (adv.adversarial["jet"][:, 0] / adv.nominal["jet"][:, 0]).double()
    assert torch.allclose(jet_ratio[attacked], largest[attacked], rtol=0, atol=1e-6)
    shift = (largest[attacked] - 1).abs()
    if mode == "worst":  # events stop at their first fooling shift, not only at +-epsilon
        assert float(shift.max()) > 0
        assert bool((shift < epsilon * REL * (1 - 1e-3)).any())
    else:
        assert torch.allclose(shift, torch.full_like(shift, epsilon * REL), atol=1e-6)


@pytest.mark.parametrize(("mode", "sign"), [("up", 1.0), ("down", -1.0)])
def test_up_and_down_are_the_fixed_variation(particle_dir: Path, mode: str, sign: float) -> None:
    epsilon = 1.0
    attack = {"method": "shift", "epsilon": epsilon, "mode": mode}
    run = make_run(particle_dir, "pfn:build", False, attacks={"jes": attack})
    adv = run.adversaries("jes")
    real = (adv.nominal["mask"] > 0) & adv.correct.unsqueeze(1)
    expected = (1 + sign * epsilon * REL) * adv.nominal["parts"][..., 0].double()
    got = adv.adversarial["parts"][..., 0].double()
    assert torch.allclose(got[real], expected[real], rtol=1e-6, atol=0)
    assert torch.equal(got[~real], adv.nominal["parts"][..., 0].double()[~real])
    assert not run.make_attack("jes").needs_gradients


def test_worst_case_fools_at_least_the_better_fixed_variation(particle_dir: Path) -> None:
    attacks = {name: {**ATTACKS[name], "epsilon": 2.0} for name in ("worst", "up", "down")}
    run = make_run(particle_dir, "pfn:build", False, attacks=attacks)
    fooled = {name: run.adversaries(name).fooled for name in attacks}
    counts = {name: int(f.sum()) for name, f in fooled.items()}
    assert max(counts["up"], counts["down"]) > 0, counts  # the pt scale matters here
    assert counts["worst"] >= max(counts["up"], counts["down"]), counts
    assert bool((fooled["worst"] | ~(fooled["up"] | fooled["down"])).all())


def window_run(folder: Path) -> SpecRun:
    """The window tagger (signal when the summed pt is within 1% of the median) under the
    worst, up and down JES shifts of one sigma (5%)."""
    events = make_particles(800, seed=3)
    total = np.where(events["mask"] > 0, events["parts"][..., 0], 0).sum(1)
    centre = float(np.median(total))
    model = write_window_model(folder, centre, 0.01 * centre)
    attacks = {name: {**ATTACKS[name], "epsilon": 1.0} for name in ("worst", "up", "down")}
    doc = particle_spec(model, attacks=attacks, groups=JES)
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def test_worst_case_finds_interior_shifts_the_end_points_miss(particle_dir: Path) -> None:
    """A tagger that calls signal in a narrow window of summed pt: +-epsilon overshoot it."""
    run = window_run(particle_dir)
    attacks = run.spec.attacks
    fooled = {name: run.adversaries(name).fooled for name in attacks}
    by_end_points = fooled["up"] | fooled["down"]
    assert bool((fooled["worst"] | ~by_end_points).all())
    assert int(fooled["worst"].sum()) > int(by_end_points.sum()) + 10
    # and what it found is within the envelope: |s| <= epsilon, by one factor per jet
    ratio, real = pt_ratios(run.adversaries("worst"))
    assert float((ratio[real] - 1).abs().max()) <= REL + 1e-6


def test_shift_without_coherent_group_is_a_spec_error(particle_dir: Path) -> None:
    doc = particle_spec(attacks={"jes": ATTACKS["worst"]})
    with pytest.raises(SpecError) as info:
        parse_spec(doc, particle_dir / "robustness.toml")
    message = str(info.value)
    assert "robustness.toml: attacks.jes.method: method `shift` moves coherent groups" in message
    assert "coherent = true" in message
    doc = particle_spec(attacks={"jes": {**ATTACKS["worst"], "groups": ["jse"]}}, groups=JES)
    with pytest.raises(SpecError, match=r"attacks.jes.groups: no coherent group named `jse`"):
        parse_spec(doc, particle_dir / "robustness.toml")


def test_fooled_shift_summary_names_features_and_skips_padding(particle_dir: Path) -> None:
    run = make_run(particle_dir, "pfn_jet.pt", True, attacks={"pgd": ATTACKS["pgd"]})
    result = run.run_check(run.spec.checks[0])
    adv = run.adversaries("pgd")
    assert result.figures["n_fooled"] > 0
    detail = next(line for line in result.details if "largest mean |shift|" in line)
    named = [part.split()[0] for part in detail.split(": ", 1)[1].split(", ")]
    assert set(named) <= {*PARTICLE_FEATURES, "jet_pt", "jet_mass"} and len(named) == 3
    # independent computation: mean pull over the real constituents of fooled events only
    fooled = adv.fooled.numpy()
    x0 = adv.nominal["parts"].numpy()[fooled].astype(np.float64)
    x1 = adv.adversarial["parts"].numpy()[fooled].astype(np.float64)
    real = adv.nominal["mask"].numpy()[fooled] > 0
    sigma = np.stack(
        [0.05 * np.abs(x0[..., 0]), np.full(x0.shape[:2], 0.02), np.full(x0.shape[:2], 0.02)],
        axis=-1,
    )
    expected = (np.abs(x1 - x0) / sigma)[real].mean(0)
    got = dict(adv.mean_shift_of_fooled())
    for feature, value in zip(PARTICLE_FEATURES, expected, strict=True):
        assert got[feature] == pytest.approx(value, rel=1e-4)


def test_worst_case_without_early_stop_has_the_largest_loss(particle_dir: Path) -> None:
    """With ``full`` (every event, whole budget: what an AUC needs) the worst case returns,
    per event, a shift whose loss is at least that of both fixed variations."""
    run = window_run(particle_dir)
    _, labels = run.inputs()
    loss = {}
    for name in run.spec.attacks:
        adv = run.adversaries(name, full=True)
        assert bool(adv.correct.any()) and not torch.equal(
            adv.adversarial["parts"][~adv.correct], adv.nominal["parts"][~adv.correct]
        )
        loss[name] = -adv.log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    assert bool((loss["worst"] >= torch.maximum(loss["up"], loss["down"]) - 1e-5).all())
    assert bool((loss["worst"] > torch.maximum(loss["up"], loss["down"]) + 1e-3).any())


def test_random_start_is_seeded(particle_dir: Path) -> None:
    attack = {**ATTACKS["worst"], "random_start": True, "steps": 2}
    first = make_run(particle_dir, "pfn.pt", False, attacks={"a": attack}).adversaries("a")
    again = make_run(particle_dir, "pfn.pt", False, attacks={"a": attack}).adversaries("a")
    other = make_run(particle_dir, "pfn.pt", False, attacks={"a": {**attack, "seed": 6}})
    assert torch.equal(first.adversarial["parts"], again.adversarial["parts"])
    assert not torch.equal(first.adversarial["parts"], other.adversaries("a").adversarial["parts"])


def test_feature_names_shared_by_two_inputs_are_qualified(particle_dir: Path) -> None:
    doc = particle_spec("pfn_jet.pt", with_jet=True, attacks={"pgd": ATTACKS["pgd"]})
    doc["inputs"]["jet"]["features"] = ["pt", "mass"]
    doc["envelope"]["jet"] = {"pt": {"relative": 0.02}, "mass": {"relative": 0.05}}
    run = SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu")
    names = [name for name, _ in run.adversaries("pgd").mean_shift_of_fooled()]
    assert sorted(names) == ["eta", "jet.pt", "mass", "parts.pt", "phi"]


def test_particle_inputs_tests_are_corrected_for_the_correlated_entries(
    particle_dir: Path,
) -> None:
    """Constituents of one jet are not independent entries: the tests of the particle input
    are corrected for it (robustcheck.invariance_stats) and the verdict says so with the
    design effects, in both comparisons; jet-level inputs (one entry per event) are not."""
    checks = [
        {"name": "halves", "type": "invariance", "attack": "pgd", "ks_min_pvalue": 1e-12},
        {
            "name": "same",
            "type": "invariance",
            "attack": "pgd",
            "ks_min_pvalue": 1e-12,
            "compare_to": "same_events",
        },
    ]
    doc = particle_spec("pfn_jet.pt", with_jet=True, attacks={"pgd": ATTACKS["pgd"]})
    doc["checks"] = checks
    run = SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu")
    halves, same = (run.run_check(check) for check in run.spec.checks)
    for result in (halves, same):
        assert not any(d.startswith("WARNING") for d in result.details)
        (note,) = [d for d in result.details if "corrected for the correlation" in d]
        assert note.startswith("tests on input parts corrected for the correlation of its ")
        assert "entries per event (design effect D: KS " in note
        assert "input jet" not in note
        assert result.figures["design_effect/parts"] >= 1.0
        assert result.figures["entries_per_event/parts"] > 1.0
        assert "design_effect/jet" not in result.figures
    adv = run.adversaries("pgd")
    figures = measure(adv, {name: np.ones(len(f), bool) for name, f in adv.features.items()})
    by_name = {f.feature: f for f in figures.features}
    for name in adv.features["jet"]:
        assert by_name[name].entries_per_event == 1.0
        assert by_name[name].ks_deff == by_name[name].chi2_deff == 1.0
    assert all(by_name[name].entries_per_event > 1 for name in adv.features["parts"])
