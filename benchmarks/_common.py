"""Shared pieces of the benchmarks: taggers, synthetic jets, envelopes, timers and the bare limit.

Nothing here is part of robustcheck; the benchmark scripts import it from their own folder.
The module is also copied next to the temporary spec of ``compare_peers.py`` (as
``bench_models.py``) so that ``[model] path = "bench_models:mlp"`` can build the same taggers.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_FLAT = 24
N_PARTS = 64
PART_FEATURES = ("pt", "eta", "phi", "energy")
SEED = 1234


# --------------------------------------------------------------------------------- taggers
class MLP(nn.Module):
    """4 linear layers (24 -> 128 -> 128 -> 128 -> 2) with a fixed input standardisation."""

    def __init__(self, n_in: int = N_FLAT, hidden: int = 128, n_out: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) * self.scale)


class DeepSets(nn.Module):
    """Sum-pooling DeepSets: phi per constituent, masked sum, rho on the pooled vector."""

    def __init__(self, n_feat: int = len(PART_FEATURES), hidden: int = 32, n_out: int = 2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_feat))
        self.register_buffer("scale", torch.ones(n_feat))
        self.phi = nn.Sequential(
            nn.Linear(n_feat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.phi((parts - self.mean) * self.scale)
        pooled = (h * mask.unsqueeze(-1)).sum(dim=1) / 16.0
        return self.rho(pooled)


def mlp() -> MLP:
    """Factory for ``[model] path = "bench_models:mlp"`` (weights come from a state_dict)."""
    return MLP()


def deepsets() -> DeepSets:
    return DeepSets()


# ------------------------------------------------------------------------------------ data
def flat_data(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(n, 24) float32 jet-level features of two classes, and int64 labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = (2 * y - 1)[:, None].astype(np.float64)  # -1 background, +1 signal
    x = np.empty((n, N_FLAT))
    x[:, 0:6] = rng.lognormal(3.0 + 0.12 * s, 0.5, (n, 6))  # pt-like, relative sigma
    x[:, 6:12] = np.clip(rng.normal(0.25 * s, 1.5, (n, 6)), -5, 5)  # angles, absolute sigma
    x[:, 12:18] = rng.exponential(1.0 + 0.15 * s, (n, 6)) * 5.0  # both sigmas, >= 0
    x[:, 18:20] = rng.beta(2.0 + 0.4 * s, 2.0, (n, 2))  # fractions in [0, 1]
    x[:, 20] = rng.normal(0.2 * s[:, 0], 1.0)  # frozen
    x[:, 21] = rng.poisson(20 + 3 * s[:, 0])  # integer (multiplicity)
    x[:, 22] = rng.normal(0.3 * s[:, 0], 1.0)
    x[rng.random(n) < 0.1, 22] = -999.0  # placeholder entries, never moved
    x[:, 23] = rng.lognormal(1.0 + 0.1 * s[:, 0], 0.3)
    return x.astype(np.float32), y.astype(np.int64)


def parts_data(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 64, 4) constituents (pt, eta, phi, energy), (n, 64) float mask, labels."""
    rng = np.random.default_rng(seed + 1)
    y = rng.integers(0, 2, n)
    mult = np.clip(rng.poisson(np.where(y == 1, 34, 26)), 4, N_PARTS)
    real = np.arange(N_PARTS)[None, :] < mult[:, None]
    pt = rng.exponential(np.where(y == 1, 9.0, 7.0)[:, None], (n, N_PARTS)) + 0.5
    eta = np.clip(rng.normal(0, np.where(y == 1, 0.35, 0.5)[:, None], (n, N_PARTS)), -2.5, 2.5)
    phi = rng.uniform(-math.pi, math.pi, (n, N_PARTS))
    energy = pt * np.cosh(eta)
    parts = np.stack([pt, eta, phi, energy], axis=-1) * real[..., None]
    return parts.astype(np.float32), real.astype(np.float32), y.astype(np.int64)


def standardise(model: nn.Module, x: np.ndarray, mask: np.ndarray | None = None) -> None:
    flat = x.reshape(-1, x.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1) > 0]
    flat = np.where(flat < -900, 0.0, flat)
    model.mean.copy_(torch.from_numpy(flat.mean(0).astype(np.float32)))
    model.scale.copy_(torch.from_numpy((1.0 / (flat.std(0) + 1e-6)).astype(np.float32)))


def train(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    y: torch.Tensor,
    steps: int = 300,
    batch: int = 256,
    seed: int = SEED,
) -> None:
    """A short Adam fit, so that the attack has a trained decision boundary to cross."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=gen)
        loss = F.cross_entropy(model(*(t[idx] for t in inputs)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def accuracy(model: nn.Module, inputs: dict[str, torch.Tensor], y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(*inputs.values()).argmax(1) == y).float().mean())


TRAIN_EVENTS = 8192


def build_mlp(n: int, seed: int = SEED) -> tuple[MLP, dict[str, torch.Tensor], torch.Tensor, float]:
    """The MLP, fitted on its own training sample (the same whatever ``n``), and n test events."""
    torch.manual_seed(seed)
    x_train, y_train = flat_data(TRAIN_EVENTS, seed + 100)
    model = MLP()
    standardise(model, x_train)
    train(model, (torch.from_numpy(x_train),), torch.from_numpy(y_train), steps=300)
    x, y = flat_data(n, seed)
    inputs, labels = {"x": torch.from_numpy(x)}, torch.from_numpy(y)
    return model, inputs, labels, accuracy(model, inputs, labels)


def build_deepsets(n: int, seed: int = SEED):
    """The DeepSets tagger, fitted on its own training sample, and n test events."""
    torch.manual_seed(seed)
    p_train, m_train, y_train = parts_data(TRAIN_EVENTS, seed + 100)
    model = DeepSets()
    standardise(model, p_train, m_train)
    train(
        model,
        (torch.from_numpy(p_train), torch.from_numpy(m_train)),
        torch.from_numpy(y_train),
        steps=150,
    )
    parts, mask, y = parts_data(n, seed)
    inputs = {"parts": torch.from_numpy(parts), "mask": torch.from_numpy(mask)}
    labels = torch.from_numpy(y)
    return model, inputs, labels, accuracy(model, inputs, labels)


# ------------------------------------------------------------------------------- envelopes
def flat_envelope_table() -> dict[str, dict]:
    """Per-feature envelope of the 24 flat features, as [envelope.x] TOML-like dicts."""
    table: dict[str, dict] = {}
    for i in range(N_FLAT):
        name = f"f{i:02d}"
        if i < 6:
            table[name] = {"relative": 0.05, "min": 0.0}
        elif i < 12:
            table[name] = {"absolute": 0.1, "min": -5.0, "max": 5.0}
        elif i < 18:
            table[name] = {"relative": 0.03, "absolute": 0.1, "min": 0.0}
        elif i < 20:
            table[name] = {"absolute": 0.02, "min": 0.0, "max": 1.0}
        elif i == 20:
            table[name] = {"absolute": 0.1, "frozen": True}
        elif i == 21:
            table[name] = {"integer": True}  # no sigma: never moves (as the peers' box)
        elif i == 22:
            table[name] = {"absolute": 0.1, "default": -999.0}
        else:
            table[name] = {"relative": 0.05, "min": 0.0}
    return table


def parts_envelope_table() -> dict[str, dict]:
    return {
        "pt": {"relative": 0.05, "min": 0.0},
        "eta": {"absolute": 0.03, "min": -2.5, "max": 2.5},
        "phi": {"absolute": 0.03, "min": -math.pi, "max": math.pi},
        "energy": {"relative": 0.05, "min": 0.0},
    }


INPUT_FEATURES = {"mlp": [f"f{i:02d}" for i in range(N_FLAT)], "deepsets": list(PART_FEATURES)}
PERTURBED_INPUT = {"mlp": "x", "deepsets": "parts"}


def spec_doc(kind: str, device: str, data: str, data_inputs: dict[str, str], **pgd) -> dict:
    """The spec (as a dict) of a benchmark tagger of this module, ``[model] path =
    "bench_models:KIND"`` with weights ``KIND.pt``, on the sample ``data``: its input's
    envelope table, a PGD attack with the options ``pgd`` and a fooling-rate check."""
    perturbed = PERTURBED_INPUT[kind]
    inputs: dict = {"features": INPUT_FEATURES[kind]}
    if kind == "deepsets":
        inputs["mask"] = "mask"
    table = flat_envelope_table() if kind == "mlp" else parts_envelope_table()
    return {
        "version": 1,
        "model": {"path": f"bench_models:{kind}", "weights": f"{kind}.pt", "device": device},
        "data": {"nominal": {"path": data, "labels": "y", "inputs": data_inputs}},
        "inputs": {perturbed: inputs},
        "envelope": {perturbed: table},
        "attacks": {"pgd": {"method": "pgd", **pgd}},
        "checks": [{"type": "fooling_rate", "attack": "pgd", "max": 0.5}],
    }


def write_spec(path, doc: dict):
    """Write a spec dict as TOML (tomli-w, in robustcheck's test extra); returns ``path``."""
    import tomli_w

    path.write_text(tomli_w.dumps(doc))
    return path


def feature_envelopes(table: dict[str, dict]):
    from robustcheck.spec import FeatureEnvelope

    keys = ("absolute", "relative", "min", "max", "frozen", "integer", "default")
    defaults = {"frozen": False, "integer": False}
    return {
        name: FeatureEnvelope(**{k: entry.get(k, defaults.get(k)) for k in keys})
        for name, entry in table.items()
    }


def envelope_for(kind: str):
    """robustcheck Envelope of the flat MLP input ``x`` or of the DeepSets ``parts``."""
    from robustcheck.envelope import Envelope, InputEnvelope

    if kind == "mlp":
        return Envelope(
            {"x": InputEnvelope.from_features("x", feature_envelopes(flat_envelope_table()))}
        )
    entries = feature_envelopes(parts_envelope_table())
    return Envelope({"parts": InputEnvelope.from_features("parts", entries, mask="mask")})


# ------------------------------------------------------------------------------------ timing
def set_threads(n: int) -> int:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process
    return torch.get_num_threads()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warmup: bool = True,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall times of each function, ``repeats`` times round-robin so load drift hits all alike.

    With ``cpu`` given, the process CPU time of each run is recorded there too: with one thread
    it is immune to other processes taking the cores (with several, waiting threads may spin).
    """
    if warmup:
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync(device)
            out[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - c0)
    return out


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def bare_limit(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    perturbed: str,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
) -> None:
    """The floor: ``steps`` forward + input-gradient passes per batch, nothing else.

    Same batches and the same loss reduction as robustcheck's PGD; parameters do not require
    gradients; the gradient is taken w.r.t. the perturbed input only and thrown away.
    """
    names = list(inputs)
    n = len(labels)
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        batch = {k: v[part] for k, v in inputs.items()}
        y = labels[part]
        x = batch[perturbed]
        for _ in range(steps):
            leaf = x.detach().requires_grad_(True)
            args = [leaf if k == perturbed else batch[k] for k in names]
            loss = F.cross_entropy(model(*args), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, leaf)


def minimal_pgd(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    perturbed: str,
    labels: torch.Tensor,
    box_fn: Callable,
    steps: int,
    step_size: float,
    epsilon: float,
    batch_size: int,
    seed: int = 0,
) -> torch.Tensor:
    """A hand-written PGD with robustcheck's semantics minus the early freeze.

    Random start in the box, ``steps`` signed steps of ``step_size`` sigma, projection by
    clamp; the box comes from robustcheck's Envelope. What it costs above ``bare_limit`` is
    the unavoidable price of PGD itself.
    """
    names = list(inputs)
    n = len(labels)
    out = torch.empty_like(inputs[perturbed])
    gen = torch.Generator(device=labels.device)
    gen.manual_seed(seed)
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        batch = {k: v[part] for k, v in inputs.items()}
        y = labels[part]
        box = box_fn(batch, epsilon)
        lo, hi, unit = box.lower[perturbed], box.upper[perturbed], box.unit[perturbed]
        step = unit * step_size
        x = batch[perturbed] + (
            torch.rand(unit.shape, generator=gen, device=unit.device) * 2 - 1
        ) * (epsilon * unit)
        torch.clamp(x, lo, hi, out=x)
        for _ in range(steps):
            x.requires_grad_(True)
            args = [x if k == perturbed else batch[k] for k in names]
            loss = F.cross_entropy(model(*args), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = x.detach().addcmul_(grad.sign_(), step)
                torch.clamp(x, lo, hi, out=x)
        out[part] = x.detach()
    return out


def cpu_pressure() -> str:
    """The kernel's CPU pressure (share of time some task waited for a CPU): other load."""
    try:
        with open("/proc/pressure/cpu") as fh:
            some = fh.readline().split()
        return "CPU pressure " + " ".join(f.replace("avg", "avg_") + "%" for f in some[1:4])
    except OSError:
        return "CPU pressure unknown"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__}"


def resolve(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    return torch.device(device)
