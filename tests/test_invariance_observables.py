"""[observables]: per-event observables computed from the model inputs, tested like features.

A tiny particle tagger (no training) on padded constituents (pt, eta, phi) with a mask input;
the observables file computes jet pT, mass-like width and multiplicity from them, padding
included in what it receives.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck import registry
from robustcheck.checks.invariance import Invariance
from robustcheck.core import Adversaries, SpecRun
from robustcheck.errors import ModelError, SpecError
from robustcheck.schema import validate
from robustcheck.spec import CheckSpec, parse_spec
from tests.particle_fixtures import PAD_VALUE, PARTICLE_FEATURES, make_particles

TAGGER = """
import torch


class Tagger(torch.nn.Module):
    def forward(self, parts, mask):
        w = mask.unsqueeze(-1)
        s = (torch.log1p(parts[..., :1].clamp(min=0)) * w).sum(1) / w.sum(1).clamp(min=1)
        spread = ((parts[..., 1:] ** 2) * w).sum((1, 2)).unsqueeze(1)
        score = 3.0 * s + 20.0 * spread - 13.07
        return torch.cat([-score, score], dim=1)


def build():
    return Tagger()
"""

OBSERVABLES = """
import torch

SEEN = []


def observables(inputs):
    parts, mask = inputs["parts"], inputs["mask"]
    SEEN.append({name: tuple(x.shape) for name, x in inputs.items()})
    SEEN.append(bool((parts[mask == 0] == PAD).all()))
    pt = parts[..., 0] * mask
    total = pt.sum(1)
    radius = torch.sqrt(parts[..., 1] ** 2 + parts[..., 2] ** 2)
    return {
        "sum_pt": total,
        "width": (pt * radius).sum(1) / total.clamp(min=1e-9),
        "n_above_5": ((parts[..., 0] > 5.0) & (mask > 0)).sum(1).float(),
    }
"""


def particle_folder(tmp_path: Path) -> Path:
    events = make_particles(400, seed=11)
    np.savez(tmp_path / "particles.npz", **events)
    (tmp_path / "tinytagger.py").write_text(TAGGER)
    (tmp_path / "jetobs.py").write_text(OBSERVABLES.replace("PAD", repr(PAD_VALUE)))
    return tmp_path


def particle_doc(**extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "model": {"path": "tinytagger:build"},
        "data": {
            "nominal": {
                "path": "particles.npz",
                "labels": "y",
                "inputs": {"parts": "parts", "mask": "mask"},
            }
        },
        "inputs": {"parts": {"features": list(PARTICLE_FEATURES), "mask": "mask"}},
        "envelope": {
            "parts": {
                "pt": {"relative": 0.05, "min": 0.0},
                "eta": {"absolute": 0.02},
                "phi": {"absolute": 0.02},
            }
        },
        "attacks": {"pgd": {"method": "pgd", "epsilon": 2.0, "steps": 10, "seed": 5}},
        "checks": [
            {
                "name": "invariance",
                "type": "invariance",
                "attack": "pgd",
                "ks_min_pvalue": 0.01,
                "chi2_min_pvalue": 0.01,
                "by_class": True,
            }
        ],
        **extra,
    }


def test_observables_receive_padded_inputs_and_are_tested_like_features(tmp_path: Path) -> None:
    folder = particle_folder(tmp_path)
    doc = particle_doc(observables={"function": "jetobs.py:observables"})
    spec = parse_spec(doc, folder / "robustness.toml")
    assert spec.observables == "jetobs.py:observables"
    (result,) = SpecRun(spec, device="cpu").run()
    # this test's file's module (other tests load observables files of their own)
    module = sys.modules[
        f"robustcheck_observables_{abs(hash(str((folder / 'jetobs.py').resolve())))}"
    ]
    shapes, padding = module.SEEN[0], module.SEEN[1]
    assert shapes == {"parts": (400, 16, 3), "mask": (400, 16)}  # padded, mask included
    assert padding is True  # the padding entries arrive as the data holds them
    # 3 regions x (3 constituent features + 3 observables) x KS and chi2
    assert result.figures["n_pvalue_tests"] == 36
    for name in ("sum_pt", "width", "n_above_5"):
        for region in ("all", "class 0", "class 1"):
            assert f"events_to_detect/ks/{region}/{name}" in result.figures
    # the attack moves constituent pt, so sum_pt moves: one value per event, not per entry
    assert result.figures["events_to_detect/ks/all/sum_pt"] < float("inf")
    table = "\n".join(result.details)
    assert "sum_pt" in table or "width" in table


def test_observables_errors_name_the_field(tmp_path: Path) -> None:
    folder = particle_folder(tmp_path)
    with pytest.raises(SpecError, match="not found next to the spec") as info:
        parse_spec(particle_doc(observables={"function": "nope.py:f"}), folder / "r.toml")
    assert info.value.field == "observables.function"
    with pytest.raises(SpecError, match="names no function"):
        parse_spec(particle_doc(observables={"function": "jetobs.py"}), folder / "r.toml")
    with pytest.raises(SpecError, match="unknown key"):
        parse_spec(particle_doc(observables={"fn": "jetobs.py:observables"}), folder / "r.toml")
    (folder / "bad.py").write_text(
        "import torch\ndef per_entry(inputs):\n    return {'pt': inputs['parts'][..., 0]}\n"
    )
    spec = parse_spec(particle_doc(observables={"function": "bad.py:per_entry"}), folder / "r.toml")
    with pytest.raises(ModelError, match=r"observable 'pt' has shape \(400, 16\) for 400 events"):
        SpecRun(spec, device="cpu").run()


class ParticleStandIn:
    """What the invariance check reads of a SpecRun, over given padded particle arrays."""

    def __init__(
        self,
        parts: np.ndarray,
        attacked: np.ndarray,
        mask: np.ndarray,
        observables: str,
        path: Path,
    ) -> None:
        n = len(parts)
        tensors = {"parts": torch.from_numpy(parts), "mask": torch.from_numpy(mask)}
        self._adv = Adversaries(
            attack="atk",
            description="synthetic widening",
            epsilon=1.0,
            seed=0,
            nominal=tensors,
            adversarial={**tensors, "parts": torch.from_numpy(attacked)},
            log_probs=torch.zeros(n, 2),
            correct=torch.ones(n, dtype=torch.bool),
            fooled=torch.ones(n, dtype=torch.bool),
            sigma={},
            real={"parts": torch.from_numpy(mask > 0)},
            features={"parts": tuple(PARTICLE_FEATURES)},
            seconds=0.0,
            uses_seed=False,
        )
        movable = torch.ones(3, dtype=torch.bool)
        self.envelope = SimpleNamespace(inputs={"parts": SimpleNamespace(movable=movable)})
        self.spec = SimpleNamespace(
            path=path, attacks={"atk": SimpleNamespace(options={})}, observables=observables
        )

    def adversaries(self, name: str, *args: Any, **kwargs: Any) -> Adversaries:
        return self._adv


def test_a_widening_invisible_per_constituent_shows_in_the_jet_width(tmp_path: Path) -> None:
    """Jets spread over |eta| < 2 with constituents 0.1 around the axis; the attack moves every
    constituent 5% further from its jet's axis (a few milliradians). The constituents' eta and
    phi marginals barely change; the jet width, computed from them, moves by 5%."""
    rng = np.random.default_rng(5)
    n, particles = 3000, 16
    axis = rng.uniform(-2.0, 2.0, (n, 1))
    mask = (np.arange(particles)[None, :] < rng.integers(6, particles + 1, (n, 1))).astype(
        np.float32
    )
    pt = rng.exponential(10.0, (n, particles)) + 0.5
    d_eta, d_phi = rng.normal(0, 0.1, (n, particles)), rng.normal(0, 0.1, (n, particles))
    parts = np.stack([pt, axis + d_eta, d_phi], axis=-1)
    attacked = np.stack([pt, axis + 1.05 * d_eta, 1.05 * d_phi], axis=-1)
    parts = np.where(mask[..., None] > 0, parts, PAD_VALUE).astype(np.float32)
    attacked = np.where(mask[..., None] > 0, attacked, PAD_VALUE).astype(np.float32)
    (tmp_path / "widths.py").write_text(
        "import torch\n"
        "def observables(inputs):\n"
        "    parts, mask = inputs['parts'], inputs['mask']\n"
        "    pt = parts[..., 0] * mask\n"
        "    eta_axis = (pt * parts[..., 1]).sum(1, keepdim=True) / pt.sum(1, keepdim=True)\n"
        "    phi_axis = (pt * parts[..., 2]).sum(1, keepdim=True) / pt.sum(1, keepdim=True)\n"
        "    r = torch.sqrt((parts[..., 1] - eta_axis) ** 2 + (parts[..., 2] - phi_axis) ** 2)\n"
        "    return {'jet_width': (pt * r).sum(1) / pt.sum(1)}\n"
    )
    run = ParticleStandIn(parts, attacked, mask, "widths.py:observables", tmp_path / "s.toml")
    table = {"type": "invariance", "attack": "atk", "ks_min_pvalue": 0.01}
    options = validate(table, registry.checks()["invariance"].options, "checks[0]", "s.toml")
    result = Invariance(CheckSpec(0, "widening", "invariance", options), run).evaluate()  # type: ignore[arg-type]
    assert not result.passed
    assert "for jet_width" in result.summary  # the observable fails ...
    failing = result.summary.split("for ", 1)[1].split(" |")[0]
    assert "eta" not in failing and "phi" not in failing  # ... the constituents do not
    f = result.figures
    assert f["events_to_detect_test"] == "KS jet_width"
    assert f["events_to_detect/ks/all/jet_width"] < f["events_to_detect/ks/all/eta"] / 10
