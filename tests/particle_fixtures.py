"""Fixtures for particle-level taggers: a tiny DeepSets/PFN tagger (constituents + mask) and a
variant with an extra jet-level input, in every format, with their padded particle data.

Import the fixture into a test module (``from tests.particle_fixtures import particle_dir``);
it is built once per session however many modules import it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PARTICLES = 16
PARTICLE_FEATURES = ["pt", "eta", "phi"]
JET_FEATURES = ["jet_pt", "jet_mass"]
# Padded entries hold this value in every feature, not zero, so that any attack that moved
# them (or a relative sigma on them) would show.
PAD_VALUE = -1.0

PFN_SOURCE = '''
import torch


class PFN(torch.nn.Module):
    """Deep Sets / particle-flow network: per-particle map, masked sum, event-level head."""

    def __init__(self, jet_features: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.phi = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU()
        )
        self.head = torch.nn.Sequential(
            torch.nn.Linear(16 + jet_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        )

    def pool(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.phi(parts) * mask.unsqueeze(-1)).sum(1) / 8.0

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(parts, mask))


class JetPFN(PFN):
    """The same with jet-level features concatenated to the pooled particles."""

    def __init__(self) -> None:
        super().__init__(jet_features=2)

    def forward(self, parts: torch.Tensor, mask: torch.Tensor, jet: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.pool(parts, mask), jet], dim=1))


def build():
    return PFN()


def build_jet():
    return JetPFN()
'''

WINDOW_SOURCE = '''
import torch


class Window(torch.nn.Module):
    """Signal when the summed constituent pt lies in [{low}, {high}]: only the pt scale counts."""

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (parts[..., 0] * mask).sum(1)
        inside = ({half} - (total - {centre}).abs()) / 0.2
        return torch.stack([torch.zeros_like(inside), inside], dim=1)


def build():
    return Window()
'''


def make_particles(n: int, seed: int) -> dict[str, np.ndarray]:
    """Jets of 4 to 16 constituents (pt, eta, phi), padded with PAD_VALUE, with jet features.

    Signal constituents are harder and a little wider; multiplicity carries no information,
    so the taggers lean on the pt scale.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    counts = rng.integers(4, PARTICLES + 1, n)
    counts[:3] = PARTICLES  # some full jets
    real = np.arange(PARTICLES)[None, :] < counts[:, None]
    pt = -np.sort(-rng.exponential(10.0 + 4.0 * y[:, None], (n, PARTICLES)), axis=1) + 0.5
    eta = rng.normal(0.0, 0.1 + 0.03 * y[:, None], (n, PARTICLES))
    phi = rng.normal(0.0, 0.1 + 0.03 * y[:, None], (n, PARTICLES))
    parts = np.stack([pt, eta, phi], axis=-1)
    parts = np.where(real[..., None], parts, PAD_VALUE).astype(np.float32)
    mask = real.astype(np.float32)
    w = np.where(real, pt, 0.0)
    px, py = (w * np.cos(phi)).sum(1), (w * np.sin(phi)).sum(1)
    pz, energy = (w * np.sinh(eta)).sum(1), (w * np.cosh(eta)).sum(1)
    jet_pt = np.hypot(px, py)
    jet_mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    jet = np.stack([jet_pt, jet_mass], axis=1).astype(np.float32)
    return {"parts": parts, "mask": mask, "jet": jet, "y": y}


def _fold_standardisation(layer: Any, columns: slice, mean: np.ndarray, std: np.ndarray) -> None:
    """Fold (x - mean) / std of ``columns`` of a Linear layer's input into its weights."""
    import torch

    with torch.no_grad():
        weight = layer.weight[:, columns]
        layer.bias -= weight @ torch.from_numpy((mean / std).astype(np.float32))
        layer.weight[:, columns] = weight / torch.from_numpy(std.astype(np.float32))


def train_pfn(events: dict[str, np.ndarray], with_jet: bool) -> Any:
    """A small PFN (with or without the jet input), standardisation folded into its layers."""
    import torch

    namespace: dict[str, Any] = {}
    exec(PFN_SOURCE, namespace)
    model = namespace["build_jet" if with_jet else "build"]()
    real = events["mask"] > 0
    p_mean = events["parts"][real].mean(0)
    p_std = events["parts"][real].std(0)
    j_mean, j_std = events["jet"].mean(0), events["jet"].std(0)
    parts = torch.from_numpy(np.where(real[..., None], (events["parts"] - p_mean) / p_std, 0.0))
    parts = parts.float()
    mask = torch.from_numpy(events["mask"])
    jet = torch.from_numpy((events["jet"] - j_mean) / j_std)
    y = torch.from_numpy(events["y"])
    args = (parts, mask, jet) if with_jet else (parts, mask)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(*args), y).backward()
        optimizer.step()
    _fold_standardisation(model.phi[0], slice(0, 3), p_mean, p_std)
    if with_jet:
        _fold_standardisation(model.head[0], slice(16, 18), j_mean, j_std)
    return model.eval()


def export_all(
    model: Any,
    example: tuple[Any, ...],
    names: list[str],
    stem: Path,
    formats: tuple[str, ...] = ("pt", "pt2", "onnx", "dynamo"),
) -> None:
    """TorchScript (traced), torch.export .pt2 and ONNX from both exporters, batch axis free
    (``formats`` picks some: ``pt``, ``pt2``, ``onnx`` legacy, ``dynamo`` ONNX)."""
    import torch

    batch = torch.export.Dim("batch")
    dynamic = {name: {0: batch} for name in names}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "pt" in formats:
            torch.jit.save(torch.jit.trace(model, example), str(stem.with_suffix(".pt")))
        if "pt2" in formats:
            program = torch.export.export(model, example, dynamic_shapes=dynamic)
            torch.export.save(program, str(stem.with_suffix(".pt2")))
        if "onnx" in formats:
            torch.onnx.export(
                model,
                example,
                str(stem.with_suffix(".onnx")),
                input_names=names,
                dynamic_axes={name: {0: "batch"} for name in names},
                dynamo=False,
            )
        if "dynamo" in formats:
            torch.onnx.export(
                model,
                example,
                str(stem.parent / f"{stem.name}_dynamo.onnx"),
                input_names=names,
                dynamic_shapes=dynamic,
                dynamo=True,
            )


_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def particle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both PFN variants in every format, with ``particles.npz``; built once per session."""
    key = str(tmp_path_factory.getbasetemp())
    if key in _BUILT:
        return _BUILT[key]
    import torch

    folder = tmp_path_factory.mktemp("particles")
    events = make_particles(800, seed=3)
    np.savez(folder / "particles.npz", **events)
    (folder / "pfn.py").write_text(PFN_SOURCE)
    for stem, with_jet in (("pfn", False), ("pfn_jet", True)):
        model = train_pfn({k: v[:600] for k, v in events.items()}, with_jet)
        torch.save(model.state_dict(), folder / f"{stem}_state.pt")
        names = ["parts", "mask", "jet"] if with_jet else ["parts", "mask"]
        example = tuple(torch.from_numpy(events[name][:8]) for name in names)
        export_all(model, example, names, folder / stem)
    _BUILT[key] = folder
    return folder


def model_paths(with_jet: bool = False) -> list[str]:
    """The same tagger as a factory, TorchScript, .pt2 and ONNX (both exporters)."""
    stem = "pfn_jet" if with_jet else "pfn"
    factory = "pfn:build_jet" if with_jet else "pfn:build"
    return [factory, f"{stem}.pt", f"{stem}.pt2", f"{stem}.onnx", f"{stem}_dynamo.onnx"]


def particle_spec(
    model: str = "pfn:build",
    *,
    with_jet: bool = False,
    attacks: dict[str, dict[str, Any]] | None = None,
    groups: list[dict[str, Any]] | None = None,
    jet_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A spec document over ``particle_dir``'s files; ``attacks`` maps name -> table."""
    model_table: dict[str, Any] = {"path": model}
    if model.startswith("pfn:"):
        model_table["weights"] = f"{model.split(':')[0]}{'_jet' if with_jet else ''}_state.pt"
    inputs = {"parts": "parts", "mask": "mask"}
    input_tables: dict[str, Any] = {"parts": {"features": list(PARTICLE_FEATURES), "mask": "mask"}}
    envelope: dict[str, Any] = {
        "parts": {
            "pt": {"relative": 0.05, "min": 0.0},
            "eta": {"absolute": 0.02},
            "phi": {"absolute": 0.02},
        }
    }
    if groups is not None:
        envelope["parts"]["groups"] = groups
    if with_jet:
        inputs["jet"] = "jet"
        input_tables["jet"] = {"features": list(JET_FEATURES)}
        envelope["jet"] = {
            "jet_pt": {"relative": 0.02, "min": 0.0},
            "jet_mass": {"relative": 0.05, "min": 0.0},
        }
        if jet_groups is not None:
            envelope["jet"]["groups"] = jet_groups
    attacks = attacks or {"pgd": {"method": "pgd", "epsilon": 1.0, "steps": 10, "seed": 5}}
    first = next(iter(attacks))
    return {
        "version": 1,
        "model": model_table,
        "data": {"nominal": {"path": "particles.npz", "labels": "y", "inputs": inputs}},
        "inputs": input_tables,
        "envelope": envelope,
        "attacks": attacks,
        "checks": [{"name": "fooling rate", "type": "fooling_rate", "attack": first, "max": 0.5}],
    }


def write_window_model(folder: Path, centre: float, half: float) -> str:
    """A hand-made tagger that calls a jet signal when its summed pt is within centre +- half.

    Returns its factory path. A coherent pt scale can push a jet into the window from an
    interior shift even when both end points overshoot it.
    """
    source = WINDOW_SOURCE.format(
        low=centre - half, high=centre + half, half=float(half), centre=float(centre)
    )
    (folder / "window.py").write_text(source)
    return "window:build"
