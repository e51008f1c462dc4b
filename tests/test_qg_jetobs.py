"""examples/qg_jets/jetobs.py: jet mass, pT, width and pTD from padded constituents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcheck.observables import evaluate_observables

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "qg_jets"


def load_jetobs():
    loader = importlib.util.spec_from_file_location("qg_jetobs", EXAMPLE / "jetobs.py")
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def numpy_observables(parts: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The same observables in float64 numpy, from massless constituent four-vectors."""
    real = mask > 0
    pt = np.where(real, parts[..., 0], 0.0).astype(np.float64)
    dy = np.where(real, parts[..., 1], 0.0).astype(np.float64)
    dphi = np.where(real, parts[..., 2], 0.0).astype(np.float64)
    px, py = pt * np.cos(dphi), pt * np.sin(dphi)
    pz, energy = pt * np.sinh(dy), pt * np.cosh(dy)
    sums = [v.sum(1) for v in (energy, px, py, pz)]
    mass2 = sums[0] ** 2 - sums[1] ** 2 - sums[2] ** 2 - sums[3] ** 2
    scalar = pt.sum(1)
    return {
        "jet_pt": np.hypot(sums[1], sums[2]),
        "jet_mass": np.sqrt(np.clip(mass2, 0, None)),
        "jet_width": (pt * np.hypot(dy, dphi)).sum(1) / scalar,
        "ptd": np.sqrt((pt**2).sum(1)) / scalar,
    }


@pytest.fixture(scope="module")
def nominal() -> dict[str, np.ndarray]:
    with np.load(EXAMPLE / "data" / "nominal.npz") as data:
        return {k: data[k] for k in ("parts", "mask", "jet_pt")}


def test_matches_numpy_on_the_padded_nominal_sample(nominal) -> None:
    jetobs = load_jetobs()
    inputs = {"parts": torch.tensor(nominal["parts"]), "mask": torch.tensor(nominal["mask"])}
    assert inputs["parts"].shape[1] == 128 and bool((inputs["mask"] == 0).any())  # padded
    got = evaluate_observables(jetobs.observables, inputs, EXAMPLE / "spec.toml", "nominal")
    expected = numpy_observables(nominal["parts"], nominal["mask"])
    assert sorted(got) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name].numpy(), values, rtol=2e-4, err_msg=name)
    # the jet pT from the constituents is the stored jet pT
    np.testing.assert_allclose(got["jet_pt"].numpy(), nominal["jet_pt"], rtol=1e-4)
    assert float(got["jet_mass"].min()) > 0 and float(got["ptd"].max()) <= 1


def test_padding_is_excluded_and_gradients_are_finite(nominal) -> None:
    jetobs = load_jetobs()
    parts = torch.tensor(nominal["parts"][:50])
    mask = torch.tensor(nominal["mask"][:50])
    clean = jetobs.observables({"parts": parts, "mask": mask})
    garbage = parts.clone()
    garbage[mask == 0] = torch.tensor([1e4, 50.0, -7.0, 211.0])
    dirty = jetobs.observables({"parts": garbage, "mask": mask})
    for name in clean:
        assert torch.equal(clean[name], dirty[name]), name
    leaf = garbage.clone().requires_grad_(True)
    out = jetobs.observables({"parts": leaf, "mask": mask})
    total = sum(v.sum() for v in out.values())
    (grad,) = torch.autograd.grad(total, leaf)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[mask == 0] == 0).all())
    # each of pT, rapidity and azimuth of a real constituent moves some observable
    assert bool((grad[mask > 0][:, :3] != 0).any(0).all())
