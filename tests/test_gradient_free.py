"""Gradient-free attacks (random search, SPSA), the spsa fallback and the gradient-masking check."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustcheck.attacks.random_search import event_loss
from robustcheck.cli import main
from robustcheck.core import SpecRun
from robustcheck.decision import Decision
from robustcheck.errors import ModelError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events, write_spec
from tests.test_property import StepModel, save_scripted

FALLBACK = "ran as the gradient-free spsa attack"
GRADIENT_FREE = [("random", {"samples": 30}), ("spsa", {"steps": 8, "samples": 4})]


def make_run(folder: Path, model: str, attack: dict[str, Any], **check: Any) -> SpecRun:
    doc = base_spec(model=model)
    if model == "step.pt":  # a probe for gradient masking, not a tagger
        doc["model"]["skip_gates"] = ["auc", "accuracy"]
    doc["attacks"] = {"a": {"epsilon": 2.0, "seed": 7, **attack}}
    doc["checks"] = [{"type": "fooling_rate", "attack": "a", "max": 0.05, **check}]
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def save_asinh_tagger(path: Path) -> None:
    """A two-class ONNX tagger with an Asinh activation, which the ONNX bridge cannot run."""
    w1 = np.zeros((4, 2), np.float32)
    w1[1, 0], w1[3, 1] = 1 / 8.0, 1 / 5.0  # jet_mass and n_const, scaled
    b1 = np.array([-48 / 8.0, -27 / 5.0], np.float32)
    w2 = np.array([[0.0, 2.0], [0.0, 2.0]], np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Asinh", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "asinh_tagger",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gradient_free")
    np.savez(path / "data.npz", **make_events(600, seed=3))
    save_asinh_tagger(path / "asinh.onnx")
    save_scripted(StepModel(), path / "step.pt")
    return path


@pytest.mark.parametrize("model", ["tagger.pt", "tagger.onnx"])
@pytest.mark.parametrize(("method", "options"), GRADIENT_FREE, ids=["random", "spsa"])
def test_stay_in_the_box_and_fool(model_dir: Path, model: str, method: str, options) -> None:
    run = make_run(model_dir, model, {"method": method, **options})
    adv = run.adversaries("a")
    x, x_adv = adv.nominal["x"], adv.adversarial["x"]
    sigma = 0.05 * x[:, 1].abs(), 0.05  # jet_mass relative, jet_eta absolute (base_spec)
    moved = (x_adv - x).abs()
    assert bool((moved[:, 0] <= 2.0 * 0.02 * x[:, 0] * (1 + 1e-5)).all())
    assert bool((moved[:, 1] <= 2.0 * sigma[0] * (1 + 1e-5) + 1e-5).all())
    assert bool((moved[:, 2] <= 2.0 * sigma[1] * (1 + 1e-5)).all())
    assert bool((x_adv[:, 1] >= 0).all()) and bool((x_adv[:, 2].abs() <= 2.5).all())
    assert torch.equal(x_adv[:, 3], x[:, 3])  # frozen n_const
    assert torch.equal(x_adv[~adv.correct], x[~adv.correct])  # misclassified: not attacked
    assert int(adv.fooled.sum()) > 0
    # the fooled events are fooled: the tagger, run here, disagrees with the label
    labels = run.inputs()[1]
    scores = run.tagger.evaluate({"x": x_adv[adv.fooled]}).argmax(dim=1)
    assert bool((scores != labels[adv.fooled]).all())
    assert "forward" not in adv.description and adv.description.startswith(method)


@pytest.mark.parametrize(("method", "options"), GRADIENT_FREE, ids=["random", "spsa"])
def test_seeds_reproduce(model_dir: Path, method: str, options) -> None:
    attack = {"method": method, **options}
    first = make_run(model_dir, "tagger.onnx", attack).adversaries("a").adversarial["x"]
    again = make_run(model_dir, "tagger.onnx", attack).adversaries("a").adversarial["x"]
    assert torch.equal(first, again)
    other = make_run(model_dir, "tagger.onnx", {**attack, "seed": 8})
    assert not torch.equal(first, other.adversaries("a").adversarial["x"])


def test_random_search_with_the_full_budget_keeps_its_worst_point(model_dir: Path) -> None:
    run = make_run(model_dir, "tagger.pt", {"method": "random", "samples": 20})
    adv = run.adversaries("a", full=True)
    labels = run.inputs()[1]
    decision = Decision(1)
    before = event_loss(decision, run.log_probs(), labels)
    after = event_loss(decision, adv.log_probs, labels)
    assert bool((after >= before - 1e-5).all())  # never worse than nominal for the attacker
    assert float((after - before).mean()) > 0
    spsa = make_run(model_dir, "tagger.pt", {"method": "spsa", "steps": 5, "samples": 4})
    full = spsa.adversaries("a", full=True)
    assert float(event_loss(decision, full.log_probs, labels).mean()) > float(before.mean())


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_event_loss_sums_to_the_decision_loss(threshold: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(50, 2, generator=generator), dim=1)
    decision = Decision(1, threshold)
    target = decision.target(torch.randint(0, 2, (50,), generator=generator))
    total = decision.loss(log_probs, target)
    assert float(event_loss(decision, log_probs, target).sum()) == pytest.approx(float(total))


def test_without_gradients_a_white_box_attack_fails_unless_asked_to_fall_back(
    folder: Path,
) -> None:
    run = make_run(folder, "asinh.onnx", {"method": "pgd", "steps": 6})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent (or warned) weaker attack
        with pytest.raises(ModelError) as info:
            run.run_check(run.spec.checks[0])
    error = info.value
    assert error.field == "attacks.a" and "needs input gradients" in error.message
    assert "(Asinh-17)" in error.message
    assert 'on_gradient_failure = "spsa"' in str(error.fix)
    # the CLI says the same, as a model error (exit 2), never a verdict
    spec = write_spec(folder, base_spec(model="asinh.onnx"), "nograd.robust.toml")
    assert main(["run", str(spec)]) == 2


def test_unconvertible_onnx_falls_back_to_spsa_when_asked(folder: Path) -> None:
    run = make_run(
        folder, "asinh.onnx", {"method": "pgd", "steps": 6, "on_gradient_failure": "spsa"}
    )
    with pytest.warns(UserWarning, match=FALLBACK):
        result = run.run_check(run.spec.checks[0])
    assert result.figures["fallback"] == "spsa"
    assert "(Asinh-17)" in result.message() and FALLBACK in result.message()
    assert result.details[0].startswith(
        "WARNING: gradients unavailable (robustcheck's ONNX interpreter cannot run"
    )
    assert "(gradient-free fallback)" in result.summary
    assert result.figures["n_fooled"] > 0 and result.figures["epsilon"] == 2.0
    assert result.figures["seed"] == 7  # spsa draws random directions: its seed counts
    # the fallback is spsa with the same epsilon, seed, batch size and steps, computed here
    spsa = make_run(folder, "asinh.onnx", {"method": "spsa", "steps": 6})
    assert "fallback" not in spsa.run_check(spsa.spec.checks[0]).figures
    assert torch.equal(
        spsa.adversaries("a").adversarial["x"], run.adversaries("a").adversarial["x"]
    )
    # and the invariance check carries the same warning
    doc = base_spec(model="asinh.onnx")
    doc["attacks"] = {"a": {"method": "fgsm", "epsilon": 2.0, "on_gradient_failure": "spsa"}}
    doc["checks"] = [{"type": "invariance", "attack": "a", "ks_min_pvalue": 0.0}]
    invariance = SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")
    with pytest.warns(UserWarning, match=FALLBACK):
        details = invariance.run_check(invariance.spec.checks[0]).details
    assert details[0].startswith("WARNING: gradients unavailable") and "'a' (fgsm)" in details[0]


def test_no_fallback_for_another_threat_model(folder: Path) -> None:
    # a worst-case coherent shift is not an attack in the box: spsa cannot stand in for it
    doc = base_spec(model="asinh.onnx")
    doc["envelope"]["x"]["groups"] = [
        {"name": "jes", "features": ["jet_pt"], "coherent": True, "relative": 0.02}
    ]
    doc["attacks"] = {"pgd": {"method": "shift", "epsilon": 1.0}}
    run = SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelError, match="ONNX interpreter cannot run 1 node"):
            run.adversaries("pgd")


def test_bridge_that_disagrees_falls_back_to_spsa_when_asked(model_dir: Path, monkeypatch) -> None:
    from robustcheck.taggers import onnx as onnx_backend

    def wrong_conversion(self):
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Linear(4, 2))

    monkeypatch.setattr(onnx_backend.OnnxTagger, "_convert", wrong_conversion)
    attack = {"method": "pgd", "steps": 5, "on_gradient_failure": "spsa"}
    run = make_run(model_dir, "tagger.onnx", attack)
    inputs = {"x": run.inputs()[0]["x"][:64]}
    with pytest.raises(ModelError, match="disagrees with onnxruntime"):
        run.tagger.prepare_gradients(inputs)  # the bridge is still refused ...
    with pytest.warns(UserWarning, match=FALLBACK):
        adv = run.adversaries("a")  # ... and the attack goes on without it
    assert "disagrees with onnxruntime" in adv.warnings[0]
    assert int(adv.fooled.sum()) > 0


def test_gradient_masking_is_flagged(folder: Path) -> None:
    # the step model's score has no gradient in jet_eta, the only feature that can flip it
    run = make_run(
        folder,
        "step.pt",
        {"method": "pgd", "steps": 5, "random_start": False},
        gradient_masking_check=True,
    )
    with pytest.warns(UserWarning, match="possible gradient masking"):
        result = run.run_check(run.spec.checks[0])
    assert result.figures["n_fooled"] == 0 < result.figures["n_fooled_random"]
    assert any(line.startswith("WARNING: possible gradient masking") for line in result.details)
    # the random search is the "random" attack with the same budget, reproduced here
    probe = make_run(folder, "step.pt", {"method": "random"}).adversaries("a")
    assert int(probe.fooled.sum()) == result.figures["n_fooled_random"]


def test_no_masking_warning_for_a_smooth_model(model_dir: Path) -> None:
    run = make_run(
        model_dir, "tagger.pt", {"method": "pgd", "steps": 10}, gradient_masking_check=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run.run_check(run.spec.checks[0])
    assert result.figures["n_fooled"] >= result.figures["n_fooled_random"] > 0
    assert not any(line.startswith("WARNING") for line in result.details)
    assert any(line.startswith("gradient-masking check passed") for line in result.details)


COVARIANCE = np.array([[9.0, 0.09], [0.09, 0.0025]])  # jet_mass (GeV) and jet_eta, rho = 0.6


@pytest.mark.parametrize(("method", "options"), GRADIENT_FREE, ids=["random", "spsa"])
def test_correlated_groups_are_respected(model_dir: Path, method: str, options) -> None:
    doc = base_spec(model="tagger.pt")
    doc["envelope"]["x"]["jet_mass"] = {"min": 0.0}  # sigmas from the covariance
    doc["envelope"]["x"]["jet_eta"] = {"min": -2.5, "max": 2.5}
    doc["envelope"]["x"]["groups"] = [
        {"features": ["jet_mass", "jet_eta"], "covariance": COVARIANCE.tolist()}
    ]
    doc["attacks"] = {"pgd": {"method": method, "epsilon": 2.0, "seed": 7, **options}}
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    adv = run.adversaries("pgd")
    delta = (adv.adversarial["x"] - adv.nominal["x"])[:, 1:3].double().numpy()
    length2 = np.einsum("ni,ij,nj->n", delta, np.linalg.inv(COVARIANCE), delta)
    assert (length2 <= 4.0 * (1 + 1e-4)).all()  # inside the Mahalanobis ball of radius 2
    assert length2.max() > 1.0 and int(adv.fooled.sum()) > 0
