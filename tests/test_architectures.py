"""Today's particle taggers in every format: small versions of the four architectures of
examples/qg_jets/architectures.py, trained briefly, exported as TorchScript, torch.export
.pt2 and ONNX from both of torch's exporters (and once with external data), fool the same
events under one white-box PGD in every format, and every ONNX export is attacked white-box.

The transformer's ``log(dR2 + 1e-8)`` loses its ``+ 1e-8`` in torch's dynamo export (see
test_a_dynamo_export_that_drops_the_epsilon_is_explained), so the formats are compared on a
subclass that writes ``clamp_min(1e-8)``, which every exporter keeps.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError
from robustcheck.sanity import SanityError
from robustcheck.spec import parse_spec
from tests.particle_fixtures import export_all, make_particles, particle_spec

ARCHITECTURES = Path(__file__).resolve().parent.parent / "examples" / "qg_jets" / "architectures.py"

SMALL_SOURCE = '''
"""Small versions of the four architectures, by factory name (weights from a state_dict)."""
import importlib.util
import pathlib

import torch

_spec = importlib.util.spec_from_file_location(
    "qg_architectures_small", pathlib.Path(__file__).with_name("qg_architectures.py")
)
arch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arch)


class ClampedTransformer(arch.ParticleTransformer):
    """The same model with ln(Delta R) of max(dR2, 1e-8): what the dynamo exporter keeps."""

    def forward(self, parts, mask):
        x = self.embed(parts)
        dr2 = arch.pairwise_dr2(parts[..., self.coords])
        log_dr = 0.5 * torch.log(dr2.clamp_min(1.0e-8))
        bias = self.pair(log_dr.unsqueeze(-1)).permute(0, 3, 1, 2)
        padded_key = (mask == 0).unsqueeze(1).unsqueeze(2)
        bias = bias.masked_fill(padded_key, -1.0e9)
        for block in self.blocks:
            x = block(x, bias)
        return self.head(arch.masked_mean(x, mask))


def transformer():
    torch.manual_seed(0)
    return ClampedTransformer(dim=8, heads=2, layers=1)


def original_transformer():
    return arch.build("transformer", dim=8, heads=2, layers=1)


def edgeconv():
    return arch.build("edgeconv", width=8, k=4)


def efn():
    return arch.build("efn", latent=8)


def fused():
    return arch.build("fused", latent=8)
'''

NAMES = ["transformer", "edgeconv", "efn", "fused"]
FORMATS = ["{name}.pt", "{name}.pt2", "{name}.onnx", "{name}_dynamo.onnx", "{name}_ext.onnx"]
ONNX_FORMATS = ["{name}.onnx", "{name}_dynamo.onnx", "{name}_ext.onnx"]
EVENTS = 600


def inputs_of(name: str) -> list[str]:
    return ["parts", "mask", "jet"] if name == "fused" else ["parts", "mask"]


def train(model: torch.nn.Module, events: dict[str, np.ndarray], names: list[str]) -> None:
    """A few dozen Adam steps on the raw inputs: enough for the sanity gates' AUC."""
    args = [torch.from_numpy(events[n][:400]) for n in names]
    y = torch.from_numpy(events["y"][:400])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(*args), y).backward()
        optimizer.step()
    model.eval()


def save_with_external_data(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        location=f"{target.name}.data",
        size_threshold=0,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four small taggers in every format, their data, and the transformer as written
    (with ``+ 1e-8``) exported by the dynamo exporter; built once for the module."""
    path = tmp_path_factory.mktemp("architectures")
    shutil.copy(ARCHITECTURES, path / "qg_architectures.py")
    (path / "small_taggers.py").write_text(SMALL_SOURCE)
    events = make_particles(EVENTS, seed=11)
    np.savez(path / "particles.npz", **events)
    sys.path.insert(0, str(path))
    try:
        import small_taggers
    finally:
        sys.path.remove(str(path))
        sys.modules.pop("small_taggers", None)
    for name in NAMES:
        model = getattr(small_taggers, name)()
        names = inputs_of(name)
        train(model, events, names)
        torch.save(model.state_dict(), path / f"{name}_state.pt")
        example = tuple(torch.from_numpy(events[n][:8]) for n in names)
        export_all(model, example, names, path / name)
        save_with_external_data(path / f"{name}.onnx", path / f"{name}_ext.onnx")
    # the transformer as architectures.py writes it, trained the same way, through the
    # dynamo exporter: every pair weight positive gives finite scores and NaN gradients, one
    # negative gives NaN scores
    original = small_taggers.original_transformer()
    train(original, events, ["parts", "mask"])
    example = (torch.from_numpy(events["parts"][:8]), torch.from_numpy(events["mask"][:8]))
    for stem, sign in (("eps_finite", 1.0), ("eps_nan", -1.0)):
        with torch.no_grad():
            original.pair.weight.abs_()
            original.pair.weight[0].mul_(sign)
        export_all(original, example, ["parts", "mask"], path / stem, ("onnx", "dynamo"))
    return path


def spec_for(folder: Path, name: str, model: str, method: str = "pgd", **options: Any) -> SpecRun:
    """A run of one attack, named "pgd" whatever its method, on ``model``."""
    attack: dict[str, Any] = {"method": method, "epsilon": 3.0, "seed": 5}
    if method == "pgd":
        attack.update(steps=10, random_start=False)
    attack.update(options)
    doc = particle_spec(with_jet=name == "fused", attacks={"pgd": attack})
    doc["model"] = {"path": model}
    if ":" in model:
        doc["model"]["weights"] = f"{name}_state.pt"
    if model.startswith("eps_"):  # weights changed after training: the scores are the point
        doc["model"]["skip_gates"] = ["auc", "accuracy"]
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.mark.parametrize("name", NAMES)
def test_every_format_fools_the_same_events(folder: Path, name: str) -> None:
    reference = spec_for(folder, name, f"small_taggers:{name}").adversaries("pgd")
    fooled = int(reference.fooled.sum())
    assert 0 < fooled < int(reference.correct.sum()), "the test needs some fooled events"
    for pattern in FORMATS:
        model = pattern.format(name=name)
        run = spec_for(folder, name, model)
        adversaries = run.adversaries("pgd")
        assert adversaries.fallback is None, model
        assert torch.equal(adversaries.correct, reference.correct), model
        assert torch.equal(adversaries.fooled, reference.fooled), (
            model,
            int(adversaries.fooled.sum()),
            fooled,
        )


@pytest.mark.parametrize("name", NAMES)
def test_white_box_attacks_run_on_every_onnx_export(folder: Path, name: str) -> None:
    for pattern in ONNX_FORMATS:
        model = pattern.format(name=name)
        for method in ("fgsm", "pgd"):
            run = spec_for(folder, name, model, method=method)
            adversaries = run.adversaries("pgd")
            assert run.tagger.differentiable, (model, run.tagger.bridge_error)
            assert adversaries.fallback is None
            assert run.tagger.bridge_max_diff is not None and run.tagger.bridge_max_diff < 1e-4
            assert run.tagger.bridge_gradient_events, model  # finite differences were checked
            assert adversaries.fooled.any(), (model, method)


def input_gradients(run: SpecRun) -> dict[str, torch.Tensor]:
    """Input gradients of the summed class log-probabilities over the whole sample."""
    inputs, _ = run.inputs()
    run.tagger.prepare_gradients({n: x[:512] for n, x in inputs.items()})
    leaves = {n: x.clone().requires_grad_(n != "mask") for n, x in inputs.items()}
    with run.tagger.frozen():
        out = run.tagger.log_probs(leaves)
    names = [n for n in leaves if n != "mask"]
    grads = torch.autograd.grad(out[:, 0].sum(), [leaves[n] for n in names])
    return dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_onnx_input_gradients_are_the_torch_models_on_every_entry(folder: Path, name: str) -> None:
    # padded entries included: no NaN for an attack's sign() to hide
    reference = input_gradients(spec_for(folder, name, f"small_taggers:{name}"))
    for pattern in ONNX_FORMATS:
        grads = input_gradients(spec_for(folder, name, pattern.format(name=name)))
        for key, grad in grads.items():
            assert bool(torch.isfinite(grad).all()), (pattern, key)
            scale = float(reference[key].abs().max())
            assert torch.allclose(grad, reference[key], rtol=1e-3, atol=1e-5 * scale), (
                pattern,
                key,
                float((grad - reference[key]).abs().max()) / scale,
            )


def test_external_data_is_read_from_beside_the_model(folder: Path) -> None:
    model = onnx.load(str(folder / "efn_ext.onnx"), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert (folder / "efn_ext.onnx.data").exists()


def test_an_operator_the_bridge_lacks_names_its_node(folder: Path) -> None:
    # Shrink(lambd=0, bias=0) is the identity: onnxruntime scores the model as before
    model = onnx.load(str(folder / "efn.onnx"))
    relu = next(node for node in model.graph.node if node.op_type == "Relu")
    relu.op_type = "Shrink"
    relu.attribute.extend([onnx.helper.make_attribute("lambd", 0.0)])
    onnx.save(model, str(folder / "efn_shrink.onnx"))
    with pytest.raises(ModelError) as info:
        spec_for(folder, "efn", "efn_shrink.onnx").adversaries("pgd")
    text = str(info.value)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert f"node `{relu.name}` (Shrink-{opset})" in text
    assert "robustcheck's ONNX interpreter cannot run 1 node of the model" in text
    assert 'on_gradient_failure = "spsa"' in text
    # the gradient-free fallback runs only when asked, and says so
    run = spec_for(folder, "efn", "efn_shrink.onnx", on_gradient_failure="spsa", steps=2)
    with pytest.warns(UserWarning, match="gradient-free spsa"):
        assert run.adversaries("pgd").fallback == "spsa"


def test_a_dynamo_export_that_drops_the_epsilon_is_explained(folder: Path) -> None:
    graph = onnx.load(str(folder / "eps_nan_dynamo.onnx")).graph
    log = next(node for node in graph.node if node.op_type == "Log")
    producer = next(node for node in graph.node if log.input[0] in node.output)
    assert producer.op_type == "ReduceSum"  # the `+ 1e-8` between them is gone
    legacy = onnx.load(str(folder / "eps_nan.onnx")).graph
    legacy_log = next(node for node in legacy.node if node.op_type == "Log")
    assert next(n for n in legacy.node if legacy_log.input[0] in n.output).op_type == "Add"

    # NaN scores: the sanity gate names the file, the node and the fix
    with pytest.raises(SanityError) as info:
        spec_for(folder, "transformer", "eps_nan_dynamo.onnx").sanity()
    text = str(info.value)
    assert "the ONNX file itself gives NaN or infinite scores" in text
    assert "not a fault of robustcheck's gradient bridge" in text
    assert f"node `{log.name}` (Log-" in text and "is 0 there" in text
    assert "removes the addition of a constant within 1e-8 of 0" in text
    assert "clamp_min(1e-8)" in text and "optimize=False" in text
    # the legacy export of the same model keeps the constant and passes the gate
    spec_for(folder, "transformer", "eps_nan.onnx").sanity()

    # finite scores, NaN input gradients: the white-box attack fails with the same cause
    with pytest.raises(ModelError) as info:
        spec_for(folder, "transformer", "eps_finite_dynamo.onnx").adversaries("pgd")
    text = str(info.value)
    assert "input gradients of `parts` are NaN or infinite" in text
    assert "the ONNX graph itself is not differentiable there" in text
    assert f"node `{log.name}` (Log-" in text
    assert "clamp_min(1e-8)" in text
