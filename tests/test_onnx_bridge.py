"""The ONNX bridge (robustcheck's interpreter of the graph) runs what today's torch exporters
write: Split-18 (torch.split and chunk), Gelu-20 (exact and tanh), Reshape with allowzero=1
and Clip with an empty bound, and white-box PGD through it fools the same events as the torch
module itself; single operators (GatherElements, ScatterND, ...) give onnxruntime's values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError
from robustcheck.spec import parse_spec
from robustcheck.taggers import onnx as onnx_backend
from tests.conftest import base_spec, export_onnx, make_events

MODELS_SOURCE = '''
import torch


class Tagger(torch.nn.Module):
    """Standardised features through one construct of interest, then a linear head."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("std", torch.ones(4))
        self.embed = torch.nn.Linear(1, 4)
        self.inner = torch.nn.Linear(4, 16)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, input):
        z = (input - self.mean) / self.std
        if self.kind == "reshape":  # tokens of width 4, flattened back per event
            h = torch.tanh(self.embed(z.unsqueeze(-1)).reshape(z.shape[0], -1))
        elif self.kind == "gelu":
            h = torch.nn.functional.gelu(self.inner(z))
        elif self.kind == "gelu_tanh":
            h = torch.nn.functional.gelu(self.inner(z), approximate="tanh")
        elif self.kind == "split":
            a, b = torch.split(self.inner(z), [6, 10], dim=-1)
            c, d = torch.chunk(b, 2, dim=-1)
            h = torch.cat([torch.tanh(a), c * torch.sigmoid(d), d], dim=-1)
        else:
            h = torch.clamp(self.inner(z), min=0.0)
        return self.head(h)


def split():
    return Tagger("split")


def gelu():
    return Tagger("gelu")


def gelu_tanh():
    return Tagger("gelu_tanh")


def reshape():
    return Tagger("reshape")


def clamp():
    return Tagger("clamp")
'''

KINDS = ["split", "gelu", "gelu_tanh", "reshape", "clamp"]
# (exporter, legacy opset): torch's default exporter, the legacy one at its default opset, and
# the legacy one at opset 17 for clamp (Clip with an empty `max`)
EXPORTS = [("dynamo", None), ("legacy", None)]
EXTRA_EXPORTS = {"clamp": [("legacy", 17)]}


def export_name(kind: str, exporter: str, opset: int | None) -> str:
    return f"{kind}_{exporter}{opset or ''}.onnx"


def train(model: torch.nn.Module, events: dict[str, np.ndarray]) -> torch.nn.Module:
    x = torch.from_numpy(events["x"])
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0))
    y = torch.from_numpy(events["y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx_bridge")
    events = make_events(600, seed=4)
    np.savez(path / "data.npz", **events)
    (path / "ops_models.py").write_text(MODELS_SOURCE)
    namespace: dict[str, Any] = {}
    exec(MODELS_SOURCE, namespace)
    example = torch.from_numpy(events["x"][:8])
    for kind in KINDS:
        model = train(namespace[kind](), events)
        torch.save(model.state_dict(), path / f"{kind}.pt")
        for exporter, opset in EXPORTS + EXTRA_EXPORTS.get(kind, []):
            export_onnx(
                model,
                example,
                path / export_name(kind, exporter, opset),
                dynamo=exporter == "dynamo",
                opset=opset,
            )
    return path


def make_run(folder: Path, model: str) -> SpecRun:
    doc = base_spec(model=model, epsilon=2.0, random_start=False)
    if ":" in model:
        doc["model"]["weights"] = model.split(":")[1] + ".pt"
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def constructs(path: Path) -> set[str]:
    """The constructs of interest in an exported graph."""
    model = onnx.load(str(path))
    found = set()
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Split":
            found.add("Split")
        elif node.op_type == "Gelu":
            found.add(f"Gelu:{attributes.get('approximate', b'none').decode()}")
        elif node.op_type == "Reshape" and attributes.get("allowzero") == 1:
            found.add("Reshape:allowzero")
        elif node.op_type == "Clip" and len(node.input) == 3 and node.input[2] == "":
            found.add("Clip:empty_max")
    return found


# what each export must contain, or the test would not cover what onnx2torch 1.5.15 lacked
EXPECTED = {
    ("split", "dynamo"): "Split",
    ("split", "legacy"): "Split",
    ("gelu", "dynamo"): "Gelu:none",
    ("gelu", "legacy"): "Gelu:none",
    ("gelu_tanh", "dynamo"): "Gelu:tanh",
    ("gelu_tanh", "legacy"): "Gelu:tanh",
    ("reshape", "dynamo"): "Reshape:allowzero",
    ("clamp", "legacy17"): "Clip:empty_max",
    ("clamp", "legacy"): "Clip:empty_max",
}


@pytest.mark.parametrize("kind", KINDS)
def test_pgd_through_the_bridge_fools_the_same_events_as_the_module(
    folder: Path, kind: str
) -> None:
    reference = make_run(folder, f"ops_models:{kind}").adversaries("pgd")
    assert reference.fooled.any(), "the test needs fooled events to compare"
    for exporter, opset in EXPORTS + EXTRA_EXPORTS.get(kind, []):
        name = export_name(kind, exporter, opset)
        expected = EXPECTED.get((kind, f"{exporter}{opset or ''}"))
        if expected is not None:
            assert expected in constructs(folder / name), name
        run = make_run(folder, name)
        adversaries = run.adversaries("pgd")
        assert run.tagger.differentiable, (name, run.tagger.bridge_error)
        assert adversaries.fallback is None
        assert run.tagger.bridge_max_diff is not None and run.tagger.bridge_max_diff < 1e-5, name
        assert run.tagger.bridge_gradient_events == onnx_backend.GRAD_EVENTS, name
        assert torch.equal(adversaries.correct, reference.correct), name
        assert torch.equal(adversaries.fooled, reference.fooled), name


class ScaledGradient(torch.autograd.Function):
    """The identity forward, a backward that scales the gradient by ``factor``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


class WrongGradients(torch.nn.Module):
    """A conversion whose scores are onnxruntime's and whose input gradients are not."""

    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(ScaledGradient.apply(x, self.factor))


@pytest.mark.parametrize("factor", [-1.0, 1.5])
def test_a_bridge_with_wrong_gradients_is_refused(
    folder: Path, monkeypatch: pytest.MonkeyPatch, factor: float
) -> None:
    convert = onnx_backend.OnnxTagger._convert
    monkeypatch.setattr(
        onnx_backend.OnnxTagger, "_convert", lambda self: WrongGradients(convert(self), factor)
    )
    run = make_run(folder, "split_dynamo.onnx")
    inputs, _ = run.inputs()
    with pytest.raises(ModelError) as info:
        run.tagger.prepare_gradients({"x": inputs["x"][:256]})
    text = str(info.value)
    assert "input gradients disagree with finite differences of onnxruntime's scores" in text
    assert "fix: export the torch model" in text
    assert not run.tagger.differentiable
    assert run.tagger.bridge_max_diff is not None and run.tagger.bridge_max_diff < 1e-5
    # the message gives both changes of the log-probability, off in the direction of factor
    measured, predicted = (
        float(v)
        for v in re.search(r"by (\S+) in onnxruntime, and by (\S+) by the bridge", text).groups()
    )
    ratio = predicted / measured
    assert (ratio - 1) * (factor - 1) > 0 and abs(ratio - 1) > onnx_backend.GRAD_RTOL
    # and a white-box attack fails as a model error that names it
    with pytest.raises(ModelError, match="disagree with finite differences"):
        make_run(folder, "split_dynamo.onnx").adversaries("pgd")


def test_saturated_events_are_not_used_for_the_gradient_check(folder: Path) -> None:
    # logit 1 is jet_pt (about 500): the other class's probability is about exp(-500)
    w = np.zeros((4, 2), np.float32)
    w[0, 1] = 1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        "saturated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "saturated.onnx"))
    run = make_run(folder, "saturated.onnx")
    inputs, _ = run.inputs()
    run.tagger.prepare_gradients({"x": inputs["x"][:64]})
    assert run.tagger.differentiable
    assert run.tagger.bridge_gradient_events == 0


# Single operators of robustcheck's interpreter against onnxruntime: (name, nodes, extra
# initializers, opset). The graph input is x of shape (3, 4, 5), its output y.
OP_CASES: list[tuple[str, list[Any], dict[str, np.ndarray], int]] = [
    (
        "GatherElements",
        [helper.make_node("GatherElements", ["x", "index"], ["y"], axis=2)],
        {"index": np.array([[[4, 0, -1]]], np.int64).repeat(3, 0).repeat(4, 1)},
        18,
    ),
    (
        "ScatterND",
        [helper.make_node("ScatterND", ["x", "where", "updates"], ["y"], reduction="add")],
        {
            "where": np.array([[0, 1], [2, 3], [0, 1]], np.int64),
            "updates": np.arange(15, dtype=np.float32).reshape(3, 5),
        },
        18,
    ),
    (
        "ScatterND-none",
        [helper.make_node("ScatterND", ["x", "where", "updates"], ["y"])],
        {"where": np.array([[1], [2]], np.int64), "updates": np.ones((2, 4, 5), np.float32)},
        13,
    ),
    (
        "GatherND-batch",
        [helper.make_node("GatherND", ["x", "index"], ["y"], batch_dims=1)],
        {"index": np.array([[[0, 4], [3, 1]], [[1, 1], [2, 2]], [[3, 0], [0, 0]]], np.int64)},
        18,
    ),
    (
        "Slice-negative-step",
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])],
        {
            "starts": np.array([-1, 4], np.int64),
            "ends": np.array([-100, 0], np.int64),
            "axes": np.array([2, 1], np.int64),
            "steps": np.array([-2, -1], np.int64),
        },
        18,
    ),
    (
        "Split-18-uneven",
        [
            helper.make_node("Split", ["x"], ["a", "b"], axis=2, num_outputs=2),
            helper.make_node("Concat", ["b", "a"], ["y"], axis=2),
        ],
        {},
        18,
    ),
    (
        "Softmax-11-flattens",
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        {},
        11,
    ),
    (
        "Expand-both-ways",
        [
            helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
            helper.make_node("Expand", ["s", "shape"], ["y"]),
        ],
        {"axes": np.array([1], np.int64), "shape": np.array([2, 1, 1, 5], np.int64)},
        18,
    ),
    (
        "TopK-smallest",
        [
            helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1, largest=0),
        ],
        {"k": np.array([2], np.int64)},
        18,
    ),
    (
        "ReduceMean-18-axes-input",
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
        {"axes": np.array([0, -1], np.int64)},
        18,
    ),
    (
        "Clip-13-min-only",
        [helper.make_node("Clip", ["x", "low", ""], ["y"])],
        {"low": np.array(0.1, np.float32)},
        13,
    ),
    (
        "Gelu-20-tanh",
        [helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")],
        {},
        20,
    ),
]


@pytest.mark.parametrize("case", OP_CASES, ids=[case[0] for case in OP_CASES])
def test_an_operator_runs_as_onnxruntime_runs_it(case: tuple[Any, ...]) -> None:
    import onnxruntime

    from robustcheck.taggers.onnx_graph import OnnxGraph

    _, nodes, weights, opset = case
    graph = helper.make_graph(
        nodes,
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(["y"], {"x": x})
    leaf = torch.from_numpy(x).requires_grad_(True)
    ours = OnnxGraph(model)(leaf)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(ours.sum(), [leaf])
    assert bool(torch.isfinite(grad).all())
