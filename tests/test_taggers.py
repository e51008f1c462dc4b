"""Taggers: every format gives the same answers; bad models get clear messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError
from robustcheck.spec import parse_spec
from tests.conftest import MODEL_PATHS, base_spec


def run_for(model_dir: Path, model: str, **changes) -> SpecRun:
    doc = base_spec(model=model)
    doc["model"].update(changes)
    return SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")


def test_all_formats_give_the_same_fooling_rate(model_dir: Path) -> None:
    outcomes = {}
    for model in MODEL_PATHS:
        run = run_for(model_dir, model)
        result = run.run_check(run.spec.checks[0])
        outcomes[model] = (result.figures["n_events"], result.figures["n_fooled"])
    assert len(set(outcomes.values())) == 1, outcomes
    assert next(iter(outcomes.values()))[1] > 0


def test_nominal_scores_agree_across_formats(model_dir: Path) -> None:
    reference = torch.exp(run_for(model_dir, "mlp:build").log_probs())
    for model in MODEL_PATHS[1:]:
        probs = torch.exp(run_for(model_dir, model).log_probs())
        assert torch.allclose(probs, reference, atol=1e-5), model


def test_onnx_bridge_is_verified_against_onnxruntime(model_dir: Path) -> None:
    run = run_for(model_dir, "tagger_dynamo.onnx")
    run.adversaries("pgd")
    assert run.tagger.differentiable
    assert run.tagger.bridge_max_diff is not None and run.tagger.bridge_max_diff < 1e-5


def test_onnx_bridge_that_disagrees_is_refused(model_dir: Path, monkeypatch) -> None:
    from robustcheck.taggers import onnx as onnx_backend

    def wrong_conversion(self):
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Linear(4, 2))

    monkeypatch.setattr(onnx_backend.OnnxTagger, "_convert", wrong_conversion)
    run = run_for(model_dir, "tagger.onnx")
    inputs, _ = run.inputs()
    with pytest.raises(ModelError, match="disagrees with onnxruntime by up to") as info:
        run.tagger.prepare_gradients({"x": inputs["x"][:256]})
    assert "fix: export the torch model" in str(info.value)
    assert not run.tagger.differentiable


def test_input_name_mismatch(model_dir: Path) -> None:
    doc = base_spec(model="tagger.onnx")
    doc["data"]["nominal"]["inputs"] = {"x": "x", "mask": "y"}
    doc["inputs"]["mask"] = {"perturb": False}
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    with pytest.raises(ModelError, match=r"the model's inputs are \['x'\], but the spec maps"):
        run.tagger  # noqa: B018


def test_feature_count_mismatch_with_the_model(model_dir: Path, tmp_path: Path) -> None:
    x = np.load(model_dir / "data.npz")
    np.savez(tmp_path / "data.npz", x=x["x"][:, :3], y=x["y"])
    for name in ("tagger.pt", "tagger.onnx"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
        doc = base_spec(model=name)
        doc["inputs"]["x"]["features"] = ["jet_pt", "jet_mass", "jet_eta"]
        del doc["envelope"]["x"]["n_const"]
        run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
        with pytest.raises(ModelError) as info:
            run.log_probs()
        message = str(info.value)
        assert "(3000, 3)" in message and "fix:" in message
        assert "Traceback" not in message


def test_scores_conventions() -> None:
    from robustcheck.taggers.base import to_log_probs

    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    expected = torch.log_softmax(logits, 1)
    assert torch.allclose(to_log_probs(logits, "logits"), expected)
    assert torch.allclose(to_log_probs(expected.exp(), "probabilities"), expected, atol=1e-6)
    z = logits[:, 1:] - logits[:, :1]
    assert torch.allclose(to_log_probs(z, "binary_logit"), expected, atol=1e-6)
    assert torch.allclose(to_log_probs(torch.sigmoid(z), "sigmoid"), expected, atol=1e-6)
    with pytest.raises(ModelError, match="needs one output per event"):
        to_log_probs(logits, "sigmoid")
    with pytest.raises(ModelError, match="binary_logit"):
        to_log_probs(z, "logits")


def test_not_torchscript_and_unknown_suffix(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "state.pt").write_bytes((model_dir / "state.pt").read_bytes())
    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "data.npz").write_bytes((model_dir / "data.npz").read_bytes())
    run = SpecRun(parse_spec(base_spec(model="state.pt"), tmp_path / "r.toml"), device="cpu")
    with pytest.raises(ModelError, match="not a TorchScript file"):
        run.tagger  # noqa: B018
    run = SpecRun(parse_spec(base_spec(model="model.keras"), tmp_path / "r.toml"), device="cpu")
    with pytest.raises(ModelError, match="no loader for `.keras` files"):
        run.tagger  # noqa: B018


def test_factory_errors(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="cannot import `no_such_module`"):
        run_for(model_dir, "no_such_module:build").tagger  # noqa: B018
    with pytest.raises(ModelError, match="`mlp` has no attribute `nope`"):
        run_for(model_dir, "mlp:nope").tagger  # noqa: B018


def test_two_specs_with_the_same_module_name_get_their_own_models(
    tmp_path: Path, model_dir: Path
) -> None:
    runs = []
    for name, scale in (("a", 1.0), ("b", -1.0)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(model_dir / "data.npz", folder / "data.npz")
        (folder / "model.py").write_text(
            "import torch\n\n"
            "def build():\n"
            "    layer = torch.nn.Linear(4, 2)\n"
            "    with torch.no_grad():\n"
            "        layer.weight.zero_()\n"
            f"        layer.bias.copy_(torch.tensor([0.0, {scale}]))\n"
            "    return layer\n"
        )
        runs.append(
            SpecRun(parse_spec(base_spec(model="model:build"), folder / "r.toml"), device="cpu")
        )
    first, second = (run.tagger.module.bias.tolist() for run in runs)
    assert first == [0.0, 1.0] and second == [0.0, -1.0]
