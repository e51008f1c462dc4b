"""Fixtures that make tiny taggers (torch, TorchScript, torch.export, ONNX) and data."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

FEATURES = ["jet_pt", "jet_mass", "jet_eta", "n_const"]


def pytest_configure(config: pytest.Config) -> None:
    """No hypothesis example database in the working tree: tests that want one load their
    own profile (see test_property.py). torch._dynamo (the ONNX exporter's) is imported once
    here: an in-process pytester run undoes the imports made inside it, and importing
    torch._dynamo a second time registers its operators twice and fails."""
    import tempfile

    import torch._dynamo  # noqa: F401
    from hypothesis import settings
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tempfile.mkdtemp(prefix="robustcheck-hypothesis-"))
    settings.register_profile("robustcheck-suite", database=None)
    settings.load_profile("robustcheck-suite")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the whole session: the test models are tiny, and on a 2-core
    machine intra-op threads only contend (measured 5-20x slower with two under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MLP_SOURCE = """
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
        torch.nn.Linear(16, 2),
    )
"""


def make_events(
    n: int, seed: int, shift: float = 0.0, multiplicity_gap: float = 15.0
) -> dict[str, np.ndarray]:
    """Two classes of jets with four features; ``shift`` moves the mass scale and
    ``multiplicity_gap`` is how many more constituents class 1 has on average."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pt = rng.uniform(500, 550, n)
    mass = rng.gamma(4 + 4 * y, 8.0) * (1 + shift)
    eta = rng.uniform(-1.7, 1.7, n)
    n_const = rng.poisson(20 + multiplicity_gap * y).astype(np.float64)
    x = np.stack([pt, mass, eta, n_const], axis=1).astype(np.float32)
    return {"x": x, "y": y}


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), x.std(0)


def train_mlp(
    events: dict[str, np.ndarray],
    seed: int | None = None,
    use_multiplicity: bool = True,
    steps: int = 150,
) -> Any:
    """A small MLP with the standardisation folded into its first layer.

    ``seed`` re-initialises the weights (another training of the same model); without
    multiplicity (a frozen feature) the model must lean on the movable features.
    """
    import torch

    namespace: dict[str, Any] = {}
    exec(MLP_SOURCE, namespace)
    model = namespace["build"]()
    if seed is not None:
        torch.manual_seed(seed)
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
    mean, std = standardize(events["x"])
    x = torch.from_numpy((events["x"] - mean) / std)
    if not use_multiplicity:
        x[:, 3] = 0.0
    y = torch.from_numpy(events["y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        first = model[0]
        if not use_multiplicity:
            first.weight[:, 3] = 0.0
        first.bias -= first.weight @ torch.from_numpy(mean / std)
        first.weight /= torch.from_numpy(std)
    return model.eval()


def export_onnx(
    model: Any, example: Any, path: Path, dynamo: bool, opset: int | None = None
) -> None:
    """Export with torch's dynamo or legacy ONNX exporter (the legacy one at ``opset`` when
    given, else at its default)."""
    import torch

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["x"],
                dynamo=True,
                dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
            )
        else:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["x"],
                dynamo=False,
                dynamic_axes={"x": {0: "batch"}},
                **({} if opset is None else {"opset_version": opset}),
            )


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained MLP in every format, with its data: built once per test session."""
    import torch

    folder = tmp_path_factory.mktemp("models")
    events = make_events(3000, seed=1)
    np.savez(folder / "data.npz", **events)
    np.savez(folder / "alt.npz", **make_events(3000, seed=2, shift=0.1))
    model = train_mlp(events)
    example = torch.from_numpy(events["x"][:8])
    (folder / "mlp.py").write_text(MLP_SOURCE)
    torch.save(model.state_dict(), folder / "state.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), str(folder / "tagger.pt"))
    program = torch.export.export(
        model, (example,), dynamic_shapes={"input": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, str(folder / "tagger.pt2"))
    export_onnx(model, example, folder / "tagger.onnx", dynamo=False)
    export_onnx(model, example, folder / "tagger_dynamo.onnx", dynamo=True)
    return folder


def copy_models(model_dir: Path, folder: Path) -> Path:
    """Copies of every file of ``model_dir`` (models, weights, data) in ``folder``."""
    import shutil

    for path in model_dir.iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def model_copy(tmp_path: Path, model_dir: Path) -> Path:
    """The test's own tmp_path holding copies of model_dir's files: a test that writes specs,
    data or reports next to the models writes them here, never into the session's model_dir
    (which every later test reads)."""
    return copy_models(model_dir, tmp_path)


MODEL_PATHS = ["mlp:build", "tagger.pt", "tagger.pt2", "tagger.onnx", "tagger_dynamo.onnx"]


def base_spec(model: str = "tagger.pt", epsilon: float = 1.0, **attack: Any) -> dict[str, Any]:
    """A valid spec document (as a dict) over the model_dir fixture's files."""
    model_table: dict[str, Any] = {"path": model}
    if model == "mlp:build":
        model_table["weights"] = "state.pt"
    return {
        "version": 1,
        "model": model_table,
        "data": {"nominal": {"path": "data.npz", "labels": "y", "inputs": {"x": "x"}}},
        "inputs": {"x": {"features": list(FEATURES)}},
        "envelope": {
            "x": {
                "jet_pt": {"relative": 0.02, "min": 0.0},
                "jet_mass": {"relative": 0.05, "min": 0.0},
                "jet_eta": {"absolute": 0.05, "min": -2.5, "max": 2.5},
                "n_const": {"frozen": True},
            }
        },
        "attacks": {"pgd": {"method": "pgd", "epsilon": epsilon, "steps": 10, "seed": 7, **attack}},
        "checks": [{"name": "fooling rate", "type": "fooling_rate", "attack": "pgd", "max": 0.05}],
    }


def write_spec(folder: Path, doc: dict[str, Any], name: str = "robustness.toml") -> Path:
    path = folder / name
    if name.endswith(".toml"):
        path.write_text(tomli_w.dumps(doc))
    else:
        import yaml

        path.write_text(yaml.safe_dump(doc))
    return path
