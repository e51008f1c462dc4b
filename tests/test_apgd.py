"""APGD: stronger than fixed-step PGD where PGD stalls, inside the same box, with its margin
loss measured against the decision that is actually taken."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.attacks.apgd import APGD, checkpoints, margin_loss
from robustcheck.attacks.base import AttackBatch
from robustcheck.core import SpecRun
from robustcheck.decision import Decision
from robustcheck.errors import SpecError
from robustcheck.event_random import EventRandom
from robustcheck.spec import parse_spec
from tests import particle_fixtures
from tests.conftest import base_spec, make_events
from tests.particle_fixtures import particle_spec
from tests.test_groups import ANGLES, mahalanobis2

particle_dir = particle_fixtures.particle_dir

# A tagger whose log-odds in jet_eta (sigma 0.05) rise up to 0.1 sigma from the boundary at
# eta = 0, stay flat (zero gradient) out to 1 sigma, and rise again beyond: every event sits
# 1.1-1.7 sigma from the boundary, so an attack of 2 sigma can always fool it, but fixed
# steps of 0.5 sigma land on the plateau and stop there.
PLATEAU_SOURCE = """
import torch


class Plateau(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x[:, 2] / 0.05
        log_odds = t.clamp(-0.1, 0.1) + torch.relu(t - 1.0) - torch.relu(-t - 1.0)
        return torch.stack([-log_odds / 2, log_odds / 2], dim=1)


def build():
    return Plateau()
"""


@pytest.fixture(scope="module")
def plateau_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plateau")
    events = make_events(400, seed=5)
    rng = np.random.default_rng(6)
    side = np.where(rng.random(400) < 0.5, 1.0, -1.0)
    events["x"][:, 2] = (side * rng.uniform(1.1, 1.7, 400) * 0.05).astype(np.float32)
    events["y"] = (side > 0).astype(np.int64)
    np.savez(folder / "data.npz", **events)
    (folder / "plateau.py").write_text(PLATEAU_SOURCE)
    return folder


def run_of(folder: Path, attacks: dict[str, dict[str, Any]], model: str = "tagger.pt") -> SpecRun:
    doc = base_spec(model=model)
    doc["attacks"] = attacks
    doc["checks"][0]["attack"] = next(iter(attacks))
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def rate(run: SpecRun, attack: str) -> float:
    adv = run.adversaries(attack)
    return int(adv.fooled.sum()) / int(adv.correct.sum())


def test_apgd_fools_clearly_more_than_pgd_where_pgd_stalls(plateau_dir: Path) -> None:
    run = run_of(
        plateau_dir,
        {
            "pgd": {"method": "pgd", "epsilon": 2.0, "steps": 10, "seed": 3},
            "apgd": {"method": "apgd", "epsilon": 2.0, "steps": 10},
        },
        model="plateau:build",
    )
    assert int(run.adversaries("apgd").correct.sum()) == 400
    pgd, apgd = rate(run, "pgd"), rate(run, "apgd")
    assert pgd < 0.4  # only the random starts beyond the boundary
    assert apgd > 0.95 > pgd + 0.5


def test_apgd_is_at_least_as_strong_as_pgd_on_a_smooth_tagger(model_dir: Path) -> None:
    run = run_of(
        model_dir,
        {
            "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 10, "seed": 7},
            "apgd": {"method": "apgd", "epsilon": 1.0, "steps": 10},
            "apgd_ce": {"method": "apgd", "epsilon": 1.0, "steps": 10, "loss": "ce"},
        },
    )
    assert rate(run, "apgd") >= rate(run, "pgd") > 0
    assert rate(run, "apgd_ce") >= rate(run, "pgd")
    # without a random start nothing is drawn: the outcome claims no seed
    adv = run.adversaries("apgd")
    assert "seed" not in adv.attack_figures() and "no random start" in adv.description


@pytest.mark.filterwarnings("ignore:robustcheck.*outside the envelope's bounds")
def test_apgd_keeps_to_bounds_frozen_features_and_ellipsoids(model_dir: Path) -> None:
    doc = base_spec(epsilon=2.0)
    doc["attacks"] = {
        "apgd": {"method": "apgd", "epsilon": 2.0, "steps": 10, "restarts": 2, "seed": 4}
    }
    doc["checks"][0]["attack"] = "apgd"
    envelope = doc["envelope"]["x"]
    envelope["jet_pt"] = {"min": 0.0}
    envelope["jet_mass"] = {"min": 0.0}
    envelope["jet_eta"] = {"absolute": 0.05, "min": -1.6, "max": 1.6}
    envelope["groups"] = [
        {"features": ["jet_pt", "jet_mass"], "covariance": [[100.0, -24.0], [-24.0, 9.0]]}
    ]
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    length2, delta = mahalanobis2(run, "apgd", "x")
    assert float(length2.max()) <= 1 + 1e-5
    adv = run.adversaries("apgd")
    assert adv.fooled.any()
    eta, eta0 = adv.adversarial["x"][:, 2], adv.nominal["x"][:, 2]
    assert float(delta[:, 2].abs().max()) <= 2.0 * 0.05 * (1 + 1e-5)
    assert bool(((eta <= eta0.clamp_min(1.6)) & (eta >= eta0.clamp_max(-1.6))).all())
    assert float(delta[:, 3].abs().max()) == 0.0  # n_const is frozen
    assert "2 restarts" in adv.description and adv.attack_figures()["seed"] == 4


@pytest.mark.filterwarnings("ignore:robustcheck.*outside the envelope's bounds")
@pytest.mark.parametrize("full", [False, True])
def test_apgd_never_moves_padding_and_stays_in_each_constituents_set(
    particle_dir: Path, full: bool
) -> None:
    attacks = {"apgd": {"method": "apgd", "epsilon": 1.5, "steps": 8, "restarts": 2}}
    groups = [{**ANGLES, "correlation": [[1.0, -0.9], [-0.9, 1.0]]}]
    doc = particle_spec("pfn:build", attacks=attacks, groups=groups)
    doc["envelope"]["parts"]["eta"] = {"absolute": 0.05, "min": -0.3, "max": 0.3}
    run = SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu")
    adv = run.adversaries("apgd", full=full)
    padding = ~adv.real["parts"]
    assert torch.equal(adv.adversarial["parts"][padding], adv.nominal["parts"][padding])
    (ellipsoid,) = run.envelope.inputs["parts"].ellipsoids
    delta = (adv.adversarial["parts"] - adv.nominal["parts"]).double()
    assert float((ellipsoid.mahalanobis2(delta) / 1.5**2).max()) <= 1 + 1e-5
    pt = adv.nominal["parts"][..., 0][adv.real["parts"]].double()
    moved = delta[..., 0][adv.real["parts"]].abs()
    assert float(moved.max()) > 0 and bool((moved <= 1.5 * 0.05 * pt * (1 + 1e-5)).all())
    assert adv.fooled.any()


def test_margin_is_the_distance_to_the_decision_taken() -> None:
    torch.manual_seed(0)
    log_probs = torch.randn(2000, 3).log_softmax(1)
    target = torch.randint(0, 3, (2000,))
    argmax = Decision(1)
    margin = margin_loss(argmax, log_probs, target)
    assert torch.equal(margin > 0, argmax.decide(log_probs) != target)
    two = torch.randn(2000, 2).log_softmax(1)
    binary = target.clamp(max=1)
    other = two.gather(1, (1 - binary).unsqueeze(1)).squeeze(1)
    own = two.gather(1, binary.unsqueeze(1)).squeeze(1)
    assert torch.allclose(margin_loss(argmax, two, binary), other - own)  # logit difference
    for threshold in (0.1, 0.5, 0.93):
        decision = Decision(1, threshold)
        margin = margin_loss(decision, two, binary)
        fooled = decision.decide(two) != binary
        assert torch.equal(margin[~fooled] <= 0, torch.ones_like(margin[~fooled], dtype=bool))
        assert bool((margin[fooled] >= -1e-5).all())
        # log-odds: p = threshold sits on the boundary
        p = torch.tensor([[1 - threshold, threshold]]).log()
        assert abs(float(margin_loss(decision, p, torch.tensor([1])))) < 1e-5
    # no saturation: a confident event keeps a finite, nonzero margin gradient
    logits = torch.tensor([[0.0, 120.0]], requires_grad=True)
    loss = margin_loss(Decision(1, 0.5), logits.log_softmax(1), torch.tensor([1]))
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert math.isfinite(float(loss.detach())) and float(grad.abs().sum()) > 0


def test_checkpoints_follow_the_paper() -> None:
    points = checkpoints(100)
    assert points[0] == 22 and points[-1] <= 100
    gaps = np.diff([0, *points])
    assert (np.diff(gaps) <= 0).all() and gaps.min() >= 6
    assert checkpoints(1) == [1] and checkpoints(5) == [1, 2, 3, 4, 5]


def test_each_step_costs_one_model_evaluation(model_dir: Path) -> None:
    """``steps`` evaluations of the model per run (the last without gradients), as PGD."""
    run = run_of(model_dir, {"apgd": {"method": "apgd", "epsilon": 0.01, "steps": 7}})
    inputs, labels = run.inputs()
    nominal = {"x": inputs["x"][:64]}
    envelope = run.envelope
    calls = []

    class Counted:
        def log_probs(self, x):
            calls.append(len(x["x"]))
            return run.tagger.log_probs(x)

    batch = AttackBatch(
        tagger=Counted(),  # type: ignore[arg-type]
        nominal=nominal,
        target=labels[:64],
        box=envelope.box(nominal, 0.01),
        decision=Decision(1),
        random=EventRandom.of(0, "test", torch.arange(64)),
        early_stop=False,
    )
    with run.tagger.frozen():
        APGD(run.spec.attacks["apgd"], 0).perturb(batch)
    assert calls == [64] * 8  # the start and 7 steps


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loss": "dlr"}, r"attacks.a.loss: 'dlr' is not one of 'margin', 'ce'"),
        ({"restarts": 0}, r"attacks.a.restarts"),
        ({"steps": 0}, r"attacks.a.steps"),
        ({"step_size": 0.1}, r"unknown key `step_size`"),
    ],
)
def test_apgd_options_are_validated(model_dir: Path, options: dict[str, Any], message: str):
    doc = base_spec()
    doc["attacks"] = {"a": {"method": "apgd", "epsilon": 1.0, **options}}
    doc["checks"][0]["attack"] = "a"
    with pytest.raises(SpecError, match=message):
        parse_spec(doc, model_dir / "robustness.toml")


SYNCS = ("__bool__", "__int__", "__float__", "item", "tolist", "nonzero")


def test_no_host_sync_between_compactions(model_dir: Path, monkeypatch) -> None:
    """Reading a tensor's value on the host (a sync on a GPU) happens only where the fooled
    events are compacted (every COMPACT_EVERY steps), never per step."""
    run = run_of(model_dir, {"apgd": {"method": "apgd", "epsilon": 1.0, "steps": 20}})
    inputs, labels = run.inputs()
    nominal = {"x": inputs["x"][:512]}
    reads: list[str] = []

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            reads.append(name)
            return original(self, *args, **kwargs)

        return read

    def batch(early_stop: bool) -> AttackBatch:
        return AttackBatch(
            tagger=run.tagger,
            nominal=nominal,
            target=labels[:512],
            box=run.envelope.box(nominal, 1.0),
            decision=Decision(1),
            random=EventRandom.of(0, "test", torch.arange(512)),
            early_stop=early_stop,
        )

    attack = APGD(run.spec.attacks["apgd"], 0)
    with run.tagger.frozen():
        full, stopping = batch(False), batch(True)
        for name in SYNCS:
            monkeypatch.setattr(torch.Tensor, name, counting(name))
        attack.perturb(full)
        assert reads == []
        attack.perturb(stopping)
    assert 0 < len(reads) <= 20 // APGD.COMPACT_EVERY * 2


def test_apgd_attacks_a_working_point_threshold(model_dir: Path) -> None:
    """With a working point the margin is the log-odds distance to that threshold."""
    run = run_of(
        model_dir,
        {
            "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 10, "seed": 7},
            "apgd": {"method": "apgd", "epsilon": 1.0, "steps": 10},
        },
    )
    decision = run.decision({"signal_efficiency": 0.3})
    assert decision.threshold is not None
    pgd, apgd = run.adversaries("pgd", decision), run.adversaries("apgd", decision)
    assert int(apgd.fooled.sum()) >= int(pgd.fooled.sum()) > 0
    target = decision.target(run.labels())
    assert torch.equal(apgd.fooled, apgd.correct & (decision.decide(apgd.log_probs) != target))
