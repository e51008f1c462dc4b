"""Four particle-level taggers of today's literature, small and self-contained.

Each takes ``parts`` (jets, particles, features) and a ``mask`` (jets, particles; 1 real,
0 padding); the fused model also takes jet-level features ``jet`` (jets, jet_features). Each
returns two logits (background, signal). Feature 0 is the particle pT; ``coords`` names the
columns of the rapidity and azimuth relative to the jet axis.

- :class:`ParticleTransformer`: masked multi-head self-attention with a pairwise ln(Delta R)
  bias (Qu, Li, Qian, arXiv:2202.03772), written with ``einsum``, LayerNorm and GELU.
- :class:`EdgeConvTagger`: ParticleNet-like EdgeConv on the k nearest neighbours in (y, phi),
  found with ``topk`` and gathered by index (Qu, Gouskos, arXiv:1902.08570).
- :class:`EnergyFlowNetwork`: IRC-safe sum of pT fractions times Phi(y, phi) (Komiske,
  Metodiev, Thaler, arXiv:1810.05165).
- :class:`FusedTagger`: a Deep Sets particle branch fused with jet-level features.

They are what robustcheck's tests and benchmarks export to every format (TorchScript,
``torch.export``, ONNX from both of torch's exporters), and what ``train.py`` trains.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# a padded neighbour sits this far away in squared Delta R, so topk never picks it while a
# real one is left
FAR = 1.0e6


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (jets, particles, channels) over the real particles."""
    weight = mask.unsqueeze(-1)
    return (x * weight).sum(1) / (weight.sum(1) + 1.0e-3)


def pairwise_dr2(coords: torch.Tensor) -> torch.Tensor:
    """Squared Delta R of every pair of particles: (jets, particles, particles)."""
    difference = coords.unsqueeze(2) - coords.unsqueeze(1)
    return (difference * difference).sum(-1)


class AttentionBlock(nn.Module):
    """Pre-LayerNorm multi-head self-attention and a GELU feed-forward, both residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        jets, particles, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(jets, particles, self.heads, dim // self.heads)

        q, k, v = split(q), split(k), split(v)
        scores = torch.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(dim // self.heads)
        weights = torch.softmax(scores + bias, dim=-1)
        mixed = torch.einsum("nhqk,nkhd->nqhd", weights, v).reshape(jets, particles, dim)
        x = x + self.out(mixed)
        return x + self.ffn(self.norm2(x))


class ParticleTransformer(nn.Module):
    """A Particle-Transformer-like tagger: particle embedding, attention with a pairwise
    ln(Delta R) bias per head, padded keys masked out, masked mean pooling, two logits."""

    def __init__(
        self,
        features: int = 3,
        dim: int = 32,
        heads: int = 4,
        layers: int = 2,
        coords: tuple[int, int] = (1, 2),
    ) -> None:
        super().__init__()
        self.coords = list(coords)
        self.embed = nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pair = nn.Linear(1, heads)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(parts)
        # ln(Delta R); the 1e-8 keeps a particle's pair with itself (and padding) finite
        log_dr = 0.5 * torch.log(pairwise_dr2(parts[..., self.coords]) + 1.0e-8)
        bias = self.pair(log_dr.unsqueeze(-1)).permute(0, 3, 1, 2)
        padded_key = (mask == 0).unsqueeze(1).unsqueeze(2)
        bias = bias.masked_fill(padded_key, -1.0e9)
        for block in self.blocks:
            x = block(x, bias)
        return self.head(masked_mean(x, mask))


class EdgeConvTagger(nn.Module):
    """A ParticleNet-like tagger: EdgeConv over the ``k`` nearest real neighbours in (y, phi),
    neighbours found with ``topk`` and gathered from the flattened batch, mean pooling."""

    def __init__(
        self,
        features: int = 3,
        width: int = 32,
        k: int = 8,
        coords: tuple[int, int] = (1, 2),
    ) -> None:
        super().__init__()
        self.k = k
        self.coords = list(coords)
        self.embed = nn.Sequential(nn.Linear(features, width), nn.ReLU())
        self.edge = nn.Sequential(
            nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        jets, particles, _ = parts.shape
        x = self.embed(parts)
        distance = pairwise_dr2(parts[..., self.coords]) + FAR * (1.0 - mask).unsqueeze(1)
        neighbours = (-distance).topk(self.k, dim=-1).indices  # (jets, particles, k)
        offset = torch.arange(jets, device=parts.device).view(-1, 1, 1) * particles
        flat = x.reshape(jets * particles, -1)
        gathered = flat[(neighbours + offset).reshape(-1)].reshape(jets, particles, self.k, -1)
        centre = x.unsqueeze(2).expand_as(gathered)
        edges = self.edge(torch.cat([centre, gathered - centre], dim=-1)).mean(2)
        return self.head(masked_mean(edges, mask))


class EnergyFlowNetwork(nn.Module):
    """An Energy Flow Network: F(sum_i z_i Phi(y_i, phi_i)), z_i the pT fraction."""

    def __init__(self, latent: int = 32, coords: tuple[int, int] = (1, 2)) -> None:
        super().__init__()
        self.coords = list(coords)
        self.phi = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, latent), nn.ReLU())
        self.f = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pt = parts[..., 0] * mask
        z = pt / (pt.sum(1, keepdim=True) + 1.0e-6)
        latent = (z.unsqueeze(-1) * self.phi(parts[..., self.coords])).sum(1)
        return self.f(latent)


class FusedTagger(nn.Module):
    """Deep Sets over the particles, fused with jet-level features (clamped before a log,
    as detector quantities often are) in one head."""

    def __init__(self, features: int = 3, jet_features: int = 2, latent: int = 32) -> None:
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, latent), nn.ReLU()
        )
        self.jet = nn.Sequential(nn.Linear(jet_features, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(latent + 16, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor, jet: torch.Tensor) -> torch.Tensor:
        particles = masked_mean(self.phi(parts), mask)
        jets = self.jet(torch.log(jet.clamp(min=1.0e-3)))
        return self.head(torch.cat([particles, jets], dim=-1))


ARCHITECTURES = {
    "transformer": ParticleTransformer,
    "edgeconv": EdgeConvTagger,
    "efn": EnergyFlowNetwork,
    "fused": FusedTagger,
}


def build(name: str, **options: int) -> nn.Module:
    """One of the four architectures by name, with seeded initial weights."""
    torch.manual_seed(0)
    return ARCHITECTURES[name](**options)
