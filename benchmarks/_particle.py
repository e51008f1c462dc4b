"""Synthetic quark/gluon-like jets and the four particle taggers of examples/qg_jets, for
benchmarks/architectures.py.

Nothing here is part of robustcheck. The module is copied next to the benchmark's temporary
specs (with ``architectures.py`` from the example), so that ``[model] path =
"_particle:transformer"`` builds the same taggers there.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _example_architectures() -> ModuleType:
    """examples/qg_jets/architectures.py: copied beside this file, or in the repository
    (loaded by path: benchmarks/architectures.py has the same name)."""
    if "qg_architectures" in sys.modules:
        return sys.modules["qg_architectures"]
    here = Path(__file__).resolve().parent
    for path in (here / "architectures.py", here.parent / "examples/qg_jets/architectures.py"):
        if path.exists() and "ARCHITECTURES = {" in path.read_text():
            spec = importlib.util.spec_from_file_location("qg_architectures", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules["qg_architectures"] = module
            spec.loader.exec_module(module)
            return module
    raise ImportError("examples/qg_jets/architectures.py not found")


architectures = _example_architectures()

SLOTS = 128
PART_FEATURES = ("pt", "dy", "dphi", "pid")
JET_FEATURES = ("jet_pt", "jet_mass")
PIDS = np.array([22, 211, -211, 130, 2112, -2112, 321, -321, 11, 13])
PID_P = np.array([0.30, 0.22, 0.22, 0.05, 0.04, 0.04, 0.05, 0.05, 0.015, 0.015])
ARCHITECTURES = ("transformer", "edgeconv", "efn", "fused")


def jets(n: int, seed: int, alternative: bool = False) -> dict[str, np.ndarray]:
    """``n`` jets like the example's PYTHIA ones: 500-550 GeV, quark (label 1) multiplicity
    ~34 and gluon ~54, broadly spread (the alternative sample: ~30 and ~47, as its weaker
    shower), zero-padded to 128 slots, pT-ordered, (pt, dy, dphi, pid) relative to the jet
    axis."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    quark = label == 1
    mean = np.where(quark, 30.0 if alternative else 34.0, 47.0 if alternative else 54.0)
    spread = rng.gamma(8.0, 0.125, n)  # jet-to-jet fluctuations: the classes overlap
    mult = np.clip(rng.poisson(mean * spread), 5, SLOTS)
    real = np.arange(SLOTS)[None, :] < mult[:, None]
    share = rng.gamma(np.where(quark, 0.55, 0.75)[:, None], 1.0, (n, SLOTS)) * real
    share = -np.sort(-share, axis=1)
    jet_pt = rng.uniform(500.0, 550.0, n)
    pt = share / share.sum(1, keepdims=True) * jet_pt[:, None]
    rank = np.arange(SLOTS)[None, :] / mult[:, None]
    width = np.where(quark, 0.05, 0.075)[:, None] * (0.4 + 2.0 * rank)
    radius = np.minimum(rng.exponential(width), 0.4)
    angle = rng.uniform(0.0, 2 * math.pi, (n, SLOTS))
    dy, dphi = radius * np.cos(angle), radius * np.sin(angle)
    pid = rng.choice(PIDS, (n, SLOTS), p=PID_P / PID_P.sum())
    parts = np.stack([pt, dy, dphi, pid], axis=-1) * real[..., None]
    energy = (pt * np.cosh(dy)).sum(1)
    px, py = (pt * np.cos(dphi)).sum(1), (pt * np.sin(dphi)).sum(1)
    pz = (pt * np.sinh(dy)).sum(1)
    mass = np.sqrt(np.clip(energy**2 - px**2 - py**2 - pz**2, 1e-6, None))
    return {
        "parts": parts.astype(np.float32),
        "mask": real.astype(np.float32),
        "jet": np.stack([jet_pt, mass], axis=-1).astype(np.float32),
        "label": label.astype(np.int64),
    }


def model_inputs(name: str) -> tuple[str, ...]:
    return ("parts", "mask", "jet") if name == "fused" else ("parts", "mask")


class Scaled(nn.Module):
    """One of the four architectures on scaled constituents: log(1 + pT) / 3, the angles in
    units of R = 0.4 and a photon flag; the fused model's jet features in units of 100 GeV.
    Per-entry maps only, so the architecture's padding behaviour is unchanged."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        options = {} if name == "efn" else {"features": 4}
        self.inner = architectures.build(name, **options)

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scaled = self.scale(parts)
        if self.name == "efn":  # the EFN's z uses feature 0 as pT: give it the pT itself
            scaled = torch.cat([parts[..., :1], scaled[..., 1:3]], dim=-1)
        return self.inner(scaled, mask)

    @staticmethod
    def scale(parts: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                torch.log1p(parts[..., 0].abs()) / 3.0,
                parts[..., 1] / 0.4,
                parts[..., 2] / 0.4,
                (parts[..., 3].abs() == 22).to(parts.dtype),
            ],
            dim=-1,
        )


class ScaledFused(Scaled):
    """The fused model: constituents as :class:`Scaled`, jet features in units of 100 GeV."""

    def __init__(self) -> None:
        super().__init__("fused")

    def forward(  # type: ignore[override]
        self, parts: torch.Tensor, mask: torch.Tensor, jet: torch.Tensor
    ) -> torch.Tensor:
        return self.inner(self.scale(parts), mask, jet / 100.0)


def transformer() -> Scaled:
    return Scaled("transformer")


def edgeconv() -> Scaled:
    return Scaled("edgeconv")


def efn() -> Scaled:
    return Scaled("efn")


def fused() -> ScaledFused:
    return ScaledFused()


def fit(model: nn.Module, data: dict[str, np.ndarray], steps: int, seed: int = 1) -> None:
    """A short Adam fit on batches cut to their longest jet (the models ignore padding)."""
    generator = torch.Generator().manual_seed(seed)
    names = model_inputs(model.name)
    tensors = {k: torch.from_numpy(data[k]) for k in (*names, "label")}
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(tensors["label"]), (64,), generator=generator)
        width = int(tensors["mask"][rows].sum(1).max())
        args = [tensors[k][rows][:, :width] if k != "jet" else tensors[k][rows] for k in names]
        loss = F.cross_entropy(model(*args), tensors["label"][rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
