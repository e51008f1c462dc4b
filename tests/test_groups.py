"""Envelope groups: validation of coherent and correlated groups, the exact projection onto
the Mahalanobis ball, and attacks that stay inside it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize

from robustcheck.core import SpecRun
from robustcheck.envelope import Envelope, project_onto_ellipsoid
from robustcheck.errors import SpecError
from robustcheck.spec import parse_spec
from tests import particle_fixtures
from tests.conftest import base_spec
from tests.particle_fixtures import particle_spec

# the fixtures, for this module
particle_dir = particle_fixtures.particle_dir

JES = {"name": "jes", "features": ["pt"], "coherent": True, "relative": 0.02}
ANGLES = {"name": "angles", "features": ["eta", "phi"], "correlation": [[1.0, 0.6], [0.6, 1.0]]}


def parse(folder: Path, doc: dict[str, Any]):
    return parse_spec(doc, folder / "robustness.toml")


def spec_error(folder: Path, doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse(folder, doc)
    return str(info.value)


# --- spec ------------------------------------------------------------------------------------


def test_groups_parse_into_shifts_and_covariances(particle_dir: Path) -> None:
    doc = particle_spec(
        with_jet=True,
        groups=[JES, ANGLES],
        jet_groups=[{**JES, "features": ["jet_pt"], "absolute": 1.0}],
    )
    spec = parse(particle_dir, doc)
    jes, angles = spec.groups["parts"]
    assert (jes.name, jes.features, jes.coherent, jes.relative) == ("jes", ("pt",), True, 0.02)
    assert not jes.correlated and angles.correlated and not angles.coherent
    # a correlation is turned into a covariance with the features' absolute sigmas (0.02)
    assert np.allclose(angles.covariance, [[4e-4, 0.6 * 4e-4], [0.6 * 4e-4, 4e-4]], rtol=1e-12)
    (jet_jes,) = spec.groups["jet"]
    assert (jet_jes.name, jet_jes.relative, jet_jes.absolute) == ("jes", 0.02, 1.0)
    # the same attack validates now that coherent groups exist
    doc["attacks"] = {"jes": {"method": "shift", "epsilon": 1.0, "groups": ["jes"]}}
    doc["checks"][0]["attack"] = "jes"
    assert parse(particle_dir, doc).attacks["jes"].options["mode"] == "worst"


def test_covariance_sets_the_features_sigma(particle_dir: Path) -> None:
    doc = particle_spec(
        groups=[{"features": ["eta", "phi"], "covariance": [[9e-4, 1e-4], [1e-4, 4e-4]]}]
    )
    doc["envelope"]["parts"]["eta"] = {"min": -2.5, "max": 2.5}
    doc["envelope"]["parts"]["phi"] = {}
    spec = parse(particle_dir, doc)
    assert spec.envelope["parts"]["eta"].absolute == pytest.approx(0.03)
    assert spec.envelope["parts"]["phi"].absolute == pytest.approx(0.02)
    assert spec.groups["parts"][0].name == "parts.groups[0]"
    assert spec.envelope["parts"]["eta"].min == -2.5


def _with(groups: list[dict[str, Any]], **envelope: dict[str, Any]):
    def change(doc: dict[str, Any]) -> None:
        doc["envelope"]["parts"]["groups"] = groups
        doc["envelope"]["parts"].update(envelope)

    return change


COV = [[4e-4, 1e-4], [1e-4, 4e-4]]
ERRORS = [
    (
        _with([{**JES, "features": ["pT"]}]),
        r"envelope.parts.groups\[0\].features: unknown feature `pT`\n  fix: did you mean `pt`\?",
    ),
    (
        _with([{"features": ["pt"], "coherent": True}]),
        r"groups\[0\]: coherent group without sigma\n  fix: set `relative = ...`",
    ),
    (
        _with([{"features": ["pt"]}]),
        r"groups\[0\]: group without sigma: neither coherent nor correlated",
    ),
    (
        _with([{"features": ["pt"], "relative": 0.02}]),
        r"groups\[0\].relative: `relative` sets the shared shift of a coherent group.*\n"
        r"  fix: add `coherent = true`",
    ),
    (
        _with([JES, {**JES, "name": "other", "features": ["eta", "pt"]}]),
        r"envelope.parts.groups: feature `pt` is in two coherent groups \(`jes` and `other`\)",
    ),
    (
        _with([ANGLES, {**ANGLES, "name": "b", "features": ["phi", "eta"]}]),
        r"feature `phi` is in two correlated groups \(`angles` and `b`\)",
    ),
    (_with([JES, {**JES, "features": ["eta"]}]), r"two groups are named `jes`"),
    (
        _with([{**JES, "covariance": COV}]),
        r"groups\[0\].covariance: a coherent group moves by one shared shift and takes no",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": [[4e-4, 1e-4], [2e-4, 4e-4]]}]),
        r"groups\[0\].covariance: is not symmetric: \[0\]\[1\] = 0.0001 but \[1\]\[0\] = 0.0002",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": [[4e-4, 5e-4], [5e-4, 4e-4]]}]),
        r"groups\[0\].covariance: is not positive definite",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": [[1.0, 0.0], [0.0, -1.0]]}]),
        r"is not positive definite",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": [[4e-4, 0.0]]}]),
        r"groups\[0\].covariance: must be a 2x2 matrix \(one row per feature of the group\)",
    ),
    (_with([{"features": ["eta", "phi", "pt"], "covariance": COV}]), r"must be a 3x3 matrix"),
    (
        _with([{"features": ["eta", "phi"], "correlation": [[1.0, 1.2], [1.2, 1.0]]}]),
        r"correlation: entry \[0\]\[1\] = 1.2 is outside \[-1, 1\]",
    ),
    (
        _with([{"features": ["eta", "phi"], "correlation": [[1.0, 1.0], [1.0, 1.0]]}]),
        r"correlation: is not positive definite\n  fix: .*for fully correlated features use a "
        r"coherent group",
    ),
    (
        _with([{"features": ["eta", "phi"], "correlation": [[2.0, 0.0], [0.0, 1.0]]}]),
        r"correlation: diagonal entry \[0\]\[0\] is 2, not 1",
    ),
    (
        _with([{"features": ["pt", "eta"], "correlation": [[1.0, 0.5], [0.5, 1.0]]}]),
        r"envelope.parts.pt: a correlation is over the features' absolute sigmas, but `pt` has a "
        r"relative sigma",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": COV, "correlation": COV}]),
        r"gives both `covariance` and `correlation`",
    ),
    (
        _with([{"features": ["eta", "phi"], "covariance": COV}]),
        r"envelope.parts.eta: sigma given twice: the feature is in a group with a `covariance`",
    ),
    (
        _with([JES], pt={"frozen": True}),
        r"features: feature `pt` is frozen, so no group may move it",
    ),
    (_with([{**JES, "features": []}]), r"groups\[0\].features: lists no features"),
    (_with([{**JES, "features": ["pt", "pt"]}]), r"lists \['pt'\] more than once"),
    (_with({"features": ["pt"]}), r"envelope.parts.groups: must be a list of group tables"),
    (_with([{**JES, "sigma": 1}]), r"groups\[0\]: unknown key `sigma`"),
]


@pytest.mark.parametrize(("change", "pattern"), ERRORS)
def test_group_errors_name_the_field_and_the_fix(
    particle_dir: Path, change: Any, pattern: str
) -> None:
    doc = particle_spec()
    change(doc)
    message = spec_error(particle_dir, doc)
    assert message.startswith(f"{particle_dir / 'robustness.toml'}: envelope.parts")
    assert re.search(pattern, message), message


def test_shared_group_names_must_be_coherent(particle_dir: Path) -> None:
    doc = particle_spec(
        with_jet=True,
        groups=[{**ANGLES, "name": "jes"}],
        jet_groups=[{**JES, "features": ["jet_pt"]}],
    )
    message = spec_error(particle_dir, doc)
    assert (
        "envelope.jet.groups: group name `jes` is used in [envelope.parts], [envelope.jet]"
        in message
    )


def test_reserved_feature_name(particle_dir: Path) -> None:
    doc = particle_spec()
    doc["inputs"]["parts"]["features"] = ["pt", "eta", "groups"]
    doc["envelope"]["parts"] = {
        "pt": {"relative": 0.1},
        "eta": {"absolute": 0.1},
        "groups": {"absolute": 0.1},
    }
    assert "inputs.parts.features: the feature name `groups` is reserved" in spec_error(
        particle_dir, doc
    )


# --- projection ------------------------------------------------------------------------------


def random_covariance(rng: np.random.Generator, k: int) -> np.ndarray:
    a = rng.normal(size=(k, k))
    return a @ a.T + 10 ** rng.uniform(-3, 0) * np.eye(k)


def brentq_projection(y: np.ndarray, covariance: np.ndarray, radius: float) -> np.ndarray:
    """The KKT point (I + mu C^-1)^-1 y, with mu found by scipy's brentq on the surface."""
    precision = np.linalg.inv(covariance)

    def point(mu: float) -> np.ndarray:
        return np.linalg.solve(np.eye(len(y)) + mu * precision, y)

    def excess(mu: float) -> float:
        p = point(mu)
        return float(p @ precision @ p - radius**2)

    if excess(0.0) <= 0:
        return y
    high = 1.0
    while excess(high) > 0:
        high *= 10
    return point(brentq(excess, 0.0, high, xtol=1e-15, rtol=1e-15, maxiter=500))


def slsqp_projection(y: np.ndarray, covariance: np.ndarray, radius: float) -> np.ndarray | None:
    """The projection by generic constrained minimisation, or None when SLSQP gives up."""
    precision = np.linalg.inv(covariance)
    result = minimize(
        lambda z: np.sum((z - y) ** 2),
        np.zeros_like(y),
        jac=lambda z: 2 * (z - y),
        constraints=[
            {
                "type": "ineq",
                "fun": lambda z: radius**2 - z @ precision @ z,
                "jac": lambda z: -2 * precision @ z,
            }
        ],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    return result.x if result.success else None


def test_projection_matches_scipy_on_random_cases() -> None:
    rng = np.random.default_rng(11)
    outside = compared = 0
    for _ in range(60):
        k = int(rng.integers(1, 5))
        covariance = random_covariance(rng, k)
        eigenvalues, basis = np.linalg.eigh(covariance)
        y = rng.normal(size=k) * rng.uniform(0.1, 20)
        radius = float(rng.uniform(0.2, 3.0))
        ours, was_outside = project_onto_ellipsoid(
            torch.from_numpy(y)[None],
            torch.from_numpy(basis),
            torch.from_numpy(eigenvalues),
            radius,
        )
        ours_np = ours[0].numpy()
        exact = brentq_projection(y, covariance, radius)
        scale = max(1.0, np.abs(exact).max())
        assert np.abs(ours_np - exact).max() <= 1e-9 * scale
        assert ours_np @ np.linalg.solve(covariance, ours_np) <= radius**2 * (1 + 1e-9)
        generic = slsqp_projection(y, covariance, radius)
        if generic is not None:  # never farther from y than a generic solver's point
            compared += 1
            assert np.abs(ours_np - generic).max() <= 1e-4 * scale
            assert np.sum((ours_np - y) ** 2) <= np.sum((generic - y) ** 2) * (1 + 1e-9) + 1e-12
        outside += int(was_outside)
    assert outside > 30 and compared > 40  # most cases needed the multiplier solve


def test_projection_of_a_point_inside_is_the_identity() -> None:
    rng = np.random.default_rng(12)
    covariance = random_covariance(rng, 3)
    eigenvalues, basis = (torch.from_numpy(a) for a in np.linalg.eigh(covariance))
    radius = 1.5
    points = torch.from_numpy(rng.normal(size=(500, 3)))
    length = torch.einsum(
        "ni,ij,nj->n", points, torch.from_numpy(np.linalg.inv(covariance)), points
    ).sqrt()
    inside = points * (radius * torch.rand(500, 1, dtype=torch.float64) / length.unsqueeze(1))
    projected, outside = project_onto_ellipsoid(inside, basis, eigenvalues, radius)
    assert not bool(outside.any())
    assert torch.equal(projected, inside)


def test_box_projection_for_features_outside_groups_is_the_plain_clamp(particle_dir: Path) -> None:
    """With a correlated eta/phi group, pt is clamped exactly as without groups."""
    doc = particle_spec(groups=[ANGLES])
    grouped = Envelope.from_spec(parse(particle_dir, doc))
    plain = Envelope.from_spec(parse(particle_dir, particle_spec()))
    data = np.load(particle_dir / "particles.npz")
    nominal = {k: torch.from_numpy(data[k][:200]) for k in ("parts", "mask")}
    box, plain_box = grouped.box(nominal, 2.0), plain.box(nominal, 2.0)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(nominal["parts"].shape, generator=generator)
    adv = {"parts": nominal["parts"] + 4 * noise * box.unit["parts"]}
    reference = {"parts": adv["parts"].clone()}
    box.project_(adv)
    plain_box.project_(reference)
    assert torch.equal(adv["parts"][..., 0], reference["parts"][..., 0])
    assert not torch.equal(adv["parts"][..., 1:], reference["parts"][..., 1:])


# --- attacks in the ball ---------------------------------------------------------------------


def mahalanobis2(run: SpecRun, attack: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Mahalanobis lengths (in epsilon^2 units) of every attacked entry's displacement."""
    adv = run.adversaries(attack)
    (ellipsoid,) = run.envelope.inputs[name].ellipsoids
    delta = (adv.adversarial[name] - adv.nominal[name]).double()
    length2 = ellipsoid.mahalanobis2(delta) / adv.epsilon**2
    attacked = adv.correct.view(-1, *([1] * (length2.dim() - 1))).expand_as(length2)
    return length2[attacked & adv.real[name]], delta


@pytest.mark.parametrize("method", ["pgd", "fgsm", "constrained_pgd"])
def test_attacks_stay_in_the_ellipsoid_of_every_event(model_dir: Path, method: str) -> None:
    doc = base_spec(epsilon=2.0)
    doc["attacks"]["pgd"] = {"method": method, "epsilon": 2.0, "seed": 7}
    envelope = doc["envelope"]["x"]
    envelope["jet_pt"] = {"min": 0.0}
    envelope["jet_mass"] = {"min": 0.0}
    envelope["groups"] = [
        {
            "features": ["jet_pt", "jet_mass"],
            "covariance": [[100.0, -0.8 * 10 * 3], [-0.8 * 10 * 3, 9.0]],
        }
    ]
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    length2, delta = mahalanobis2(run, "pgd", "x")
    assert float(length2.max()) <= 1 + 1e-5
    if method != "constrained_pgd":
        assert float(length2.max()) > 1 - 1e-3  # the attack reaches the surface
    # the box of an uncorrelated feature is unchanged, the frozen one never moves
    sigma_eta = 0.05
    assert float(delta[:, 2].abs().max()) <= 2.0 * sigma_eta * (1 + 1e-5)
    assert float(delta[:, 3].abs().max()) == 0.0
    assert run.adversaries("pgd").fooled.any()


def test_pgd_keeps_every_constituent_in_its_ellipsoid(particle_dir: Path) -> None:
    epsilon = 1.5
    attacks = {"pgd": {"method": "pgd", "epsilon": epsilon, "steps": 10, "seed": 5}}
    groups = [{**ANGLES, "correlation": [[1.0, -0.9], [-0.9, 1.0]]}]
    doc = particle_spec("pfn.pt", attacks=attacks, groups=groups)
    doc["envelope"]["parts"]["eta"] = {"absolute": 0.05, "min": -0.3, "max": 0.3}
    run = SpecRun(parse(particle_dir, doc), device="cpu")
    length2, delta = mahalanobis2(run, "pgd", "parts")
    assert float(length2.max()) <= 1 + 1e-5
    assert float(length2.max()) > 1 - 1e-3
    adv = run.adversaries("pgd")
    real = adv.real["parts"]
    eta, eta0 = adv.adversarial["parts"][..., 1][real], adv.nominal["parts"][..., 1][real]
    # the bound holds (a nominal value already beyond it stays where it is) and was active
    assert bool(((eta <= eta0.clamp_min(0.3)) & (eta >= eta0.clamp_max(-0.3))).all())
    assert bool(((eta.abs() == 0.3) & (eta0.abs() < 0.3)).any())
    padding = ~adv.real["parts"]
    assert torch.equal(adv.adversarial["parts"][padding], adv.nominal["parts"][padding])
    # pt is in no group: its own box of epsilon * 5% per constituent
    pt = adv.nominal["parts"][..., 0][adv.real["parts"]].double()
    moved_pt = delta[..., 0][adv.real["parts"]].abs()
    assert float(moved_pt.max()) > 0
    assert bool((moved_pt <= epsilon * 0.05 * pt * (1 + 1e-5)).all())


def test_correlated_attack_set_is_not_the_box(particle_dir: Path) -> None:
    """Strongly correlated eta/phi: one sigma in opposite directions is outside the set."""
    doc = particle_spec(groups=[{**ANGLES, "correlation": [[1.0, 0.95], [0.95, 1.0]]}])
    envelope = Envelope.from_spec(parse(particle_dir, copy.deepcopy(doc)))
    data = np.load(particle_dir / "particles.npz")
    nominal = {k: torch.from_numpy(data[k][:50]) for k in ("parts", "mask")}
    box = envelope.box(nominal, 1.0)
    real = nominal["mask"]
    corner = nominal["parts"].clone()
    corner[..., 1] += 0.02 * real
    corner[..., 2] -= 0.02 * real
    adv = {"parts": corner}
    box.project_(adv)
    moved = adv["parts"] - nominal["parts"]
    (ellipsoid,) = envelope.inputs["parts"].ellipsoids
    length2 = ellipsoid.mahalanobis2(moved.double())[box.real["parts"]]
    assert float(length2.max()) == pytest.approx(1.0, rel=1e-5)
    # along the correlation, half a sigma in both is inside: unchanged, bit for bit
    along = nominal["parts"].clone()
    along[..., 1] += 0.01 * real
    along[..., 2] += 0.01 * real
    kept = {"parts": along.clone()}
    box.project_(kept)
    assert torch.equal(kept["parts"], along)


def test_box_of_some_events_keeps_the_ellipsoids(particle_dir: Path) -> None:
    """Projecting a subset of events equals the subset of the projection."""
    doc = particle_spec(groups=[{**ANGLES, "correlation": [[1.0, 0.9], [0.9, 1.0]]}])
    envelope = Envelope.from_spec(parse(particle_dir, doc))
    data = np.load(particle_dir / "particles.npz")
    nominal = {k: torch.from_numpy(data[k][:100]) for k in ("parts", "mask")}
    box = envelope.box(nominal, 1.0)
    generator = torch.Generator().manual_seed(1)
    noise = 3 * torch.randn(nominal["parts"].shape, generator=generator) * box.unit["parts"]
    whole = {"parts": nominal["parts"] + noise}
    rows = torch.arange(0, 100, 3)
    part = {"parts": whole["parts"][rows].clone()}
    box.project_(whole)
    box.subset(rows).project_(part)
    assert torch.equal(part["parts"], whole["parts"][rows])
    assert not torch.equal(part["parts"], (nominal["parts"] + noise)[rows])
