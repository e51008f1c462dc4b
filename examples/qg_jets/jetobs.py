"""Jet observables from the constituents, for ``[observables] function = "jetobs.py:observables"``.

The model inputs arrive as the tagger sees them: ``parts`` (jets, 128, 4) holding each
constituent's pT [GeV], rapidity and azimuth relative to the jet axis and PDG id, zero-padded,
and ``mask`` (jets, 128), 1 for a real constituent. Padded entries are excluded whatever they
hold. Constituents are taken as massless. Everything is differentiable (torch operations only,
square roots guarded at zero), so ``constrained_pgd`` can keep these observables in place.

- ``jet_pt``: the transverse momentum of the constituents' four-momentum sum.
- ``jet_mass``: its invariant mass, as (E - px)(E + px) - py^2 - pz^2 around the jet axis, which
  keeps float32 precision for narrow jets.
- ``jet_width`` (girth): sum pT_i dR_i / sum pT_i, dR_i from the jet axis.
- ``ptd``: sqrt(sum pT_i^2) / sum pT_i.
"""

from __future__ import annotations

import torch

TINY = 1e-12


def observables(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    parts, mask = inputs["parts"], inputs["mask"]
    real = mask > 0
    zero = parts.new_zeros(())
    pt = torch.where(real, parts[..., 0], zero)
    dy = torch.where(real, parts[..., 1], zero)
    dphi = torch.where(real, parts[..., 2], zero)
    px, py, pz = pt * torch.cos(dphi), pt * torch.sin(dphi), pt * torch.sinh(dy)
    # E - px per constituent: pT (cosh dy - cos dphi) = pT (2 sinh^2(dy/2) + 2 sin^2(dphi/2))
    e_minus_px = (2 * pt * (torch.sinh(dy / 2) ** 2 + torch.sin(dphi / 2) ** 2)).sum(1)
    energy_plus_px = (pt * torch.cosh(dy) + px).sum(1)
    sum_py, sum_pz = py.sum(1), pz.sum(1)
    mass2 = e_minus_px * energy_plus_px - sum_py**2 - sum_pz**2
    sum_px = px.sum(1)
    scalar = pt.sum(1).clamp_min(TINY)
    radius = torch.sqrt((dy**2 + dphi**2).clamp_min(TINY))
    return {
        "jet_pt": torch.sqrt((sum_px**2 + sum_py**2).clamp_min(TINY)),
        "jet_mass": torch.sqrt(mass2.clamp_min(TINY)),
        "jet_width": (pt * radius).sum(1) / scalar,
        "ptd": torch.sqrt((pt**2).sum(1).clamp_min(TINY)) / scalar,
    }
