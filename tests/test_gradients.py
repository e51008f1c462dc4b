"""Models without usable input gradients are named as such, never attacked in silence."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events


def save_onnx(path: Path, nodes: list, weights: dict[str, np.ndarray], opset: int) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Encoder(torch.nn.Module):
    """A transformer layer over the four features as tokens of width 1, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(1, 8)
        self.layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed((x / 100.0).unsqueeze(-1))
        return self.head(self.layer(tokens).mean(dim=1))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gradients")
    np.savez(path / "data.npz", **make_events(400, seed=4))
    # sqrt(x * c) with c = 0 for jet_eta: finite scores, but the gradient there is 0 * inf = NaN
    w = np.zeros((4, 2), np.float32)
    w[1, 1], w[2, 0] = 0.1, 1.0
    c = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
    save_onnx(
        path / "sqrt.onnx",
        [
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Sqrt", ["m"], ["s"]),
            helper.make_node("MatMul", ["s", "w"], ["logits"]),
        ],
        {"w": w, "c": c},
        17,
    )
    # RMSNormalization exists from opset 23 only: no downgrade to the bridge's opset, no converter
    save_onnx(
        path / "rmsnorm.onnx",
        [
            helper.make_node("RMSNormalization", ["x", "scale"], ["g"], axis=-1),
            helper.make_node("MatMul", ["g", "w"], ["logits"]),
        ],
        {"w": w, "scale": np.ones(4, np.float32)},
        23,
    )
    model = Encoder().eval()
    example = torch.from_numpy(make_events(8, seed=5)["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():  # bakes in the layer's inference-only fast path
            torch.jit.save(
                torch.jit.trace(model, example, check_trace=False), str(path / "nograd.pt")
            )
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(path / "grad.pt"))
    return path


def make_run(folder: Path, model: str, **attack: object) -> SpecRun:
    doc = base_spec(model=model)
    doc["model"]["skip_gates"] = ["auc", "accuracy"]  # untrained probes, not taggers
    doc["attacks"]["pgd"].update(attack)
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def test_a_torchscript_model_traced_without_gradients_is_named(folder: Path) -> None:
    run = make_run(folder, "nograd.pt")
    with pytest.raises(ModelError) as info:
        run.run()
    text = str(info.value)
    assert "needs input gradients, and the model gives none" in text
    assert "_transformer_encoder_layer_fwd" in text  # the operation without a derivative
    assert "traced under torch.no_grad()" in text
    assert "inputs of shapes" not in text  # the inputs are not blamed
    # the same model traced with gradients is attacked
    (result,) = make_run(folder, "grad.pt").run()
    assert result.figures["n_events"] > 0
    # and the weaker fallback runs only when asked, labelled
    fallback = make_run(folder, "nograd.pt", on_gradient_failure="spsa", steps=3)
    with pytest.warns(UserWarning, match="gradient-free spsa"):
        (result,) = fallback.run()
    assert result.figures["fallback"] == "spsa" and "gradient-free fallback" in result.summary


def test_the_bridge_refuses_non_finite_input_gradients(folder: Path) -> None:
    run = make_run(folder, "sqrt.onnx")
    assert run.nominal.n_events == 400  # onnxruntime scores it
    with pytest.raises(ModelError) as info:
        run.run()
    text = str(info.value)
    assert "the ONNX bridge (robustcheck's interpreter of the graph) gives no usable" in text
    assert "input gradients of `x` are NaN or infinite" in text
    # the node where the gradient stops being finite, named (the file's nodes have no names)
    assert "node `#1` (Sqrt-17) turns finite gradients of its output into +inf" in text


def test_an_operator_the_bridge_lacks_is_named(folder: Path) -> None:
    run = make_run(folder, "rmsnorm.onnx")
    with pytest.raises(ModelError) as info:
        run.run()
    text = str(info.value)
    assert "robustcheck's ONNX interpreter cannot run 1 node of the model" in text
    assert "node `#0` (RMSNormalization-23)" in text
