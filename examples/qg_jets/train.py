"""Train this example's quark/gluon taggers, export them and write their robustness specs.

Three taggers, all with quark = signal (class 1):

- ``dnn``: an MLP on six jet-substructure features computed from the constituents (jet mass,
  constituent multiplicity, pTD, girth and the angularities lambda_0.5 (LHA) and lambda_2);
- ``dnn_adv``: the same MLP trained on an equal mix of clean and adversarial jets, made by
  ``robustcheck.training.adversarial_batch`` with the envelope its spec declares;
- ``pfn``: a particle-flow network (deep set) on the constituents and their padding mask;
- ``transformer`` and ``edgeconv``: the Particle-Transformer-like and the ParticleNet-like
  (EdgeConv on k nearest neighbours) taggers of ``architectures.py`` on the PFN's
  per-constituent inputs.

Each is exported with ``torch.export`` (``NAME.pt2``) and to ONNX (``NAME.onnx``, dynamic
batch), with its test samples (nominal and alternative generator) and its spec
``NAME.robust.toml`` beside it. The transformer and EdgeConv taggers are exported with torch's
default ONNX exporter; their specs name the ``.pt2`` program and trim the padding
(``trim_padding = true``).
Then every spec is run with robustcheck and a summary is printed (and written to
``summary.json``), unless ``--no-check``; ``--check-taggers`` runs only some taggers' specs.
The tables the READMEs quote are written to ``results.md``, each between markers that
``quote.py`` copies into the READMEs. One torch thread by default (``--threads``).

    python train.py                         # out/samples/*.npz -> out/
    python train.py --samples data --out /tmp/qg --dnn-epochs 5 --pfn-epochs 2 \
        --transformer-epochs 2 --edgeconv-epochs 2                               # quick
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustcheck.training import adversarial_batch, make_envelope

HERE = Path(__file__).parent
JET_R = 0.4
FEATURES = ("jet_mass", "n_const", "ptd", "girth", "lha", "lambda_2")
PARTICLE_FEATURES = ("pt", "dy", "dphi", "pid")

# Per-constituent uncertainties: a 2% pT scale (tracks and calorimeter clusters alike) and
# 3 mrad in rapidity and azimuth; the multiplicity and the particle identity are not moved.
PARTICLE_ENVELOPE: dict[str, dict[str, Any]] = {
    "pt": {"relative": 0.02, "min": 0.0},
    "dy": {"absolute": 0.003},
    "dphi": {"absolute": 0.003},
    "pid": {"frozen": True},
}
EPSILON = 1.0  # attacks and adversarial training, in sigma
PDG_MASS = {  # GeV, the stable species PYTHIA leaves (K0S, Lambda, Sigma ... decay)
    22: 0.0,
    11: 0.000511,
    13: 0.105658,
    211: 0.139570,
    321: 0.493677,
    130: 0.497611,
    2212: 0.938272,
    2112: 0.939565,
}

# One policy for every tagger, so their verdicts compare.
THRESHOLDS = {
    "fooling_rate": 0.05,  # 95% CL upper limit on the flipped share of correct decisions
    "ks_min_pvalue": 0.01,
    "chi2_min_pvalue": 0.01,
    "control_region_events": 1_000_000,  # jets per sample in a calibration control region
    "max_auc_change_percent": 3.0,  # about twice the +-1.3% precision of ~2000 test jets
    "min_auc": 0.80,
    "max_loss_increase": 0.002,  # nats per jet, about 0.5% of a q/g tagger's mean loss
}
LOSS_GRID = {"dnn": ("jet_mass", "girth"), "pfn": None}
PARTICLE_TAGGERS = ("transformer", "edgeconv")  # from architectures.py
TAGGERS = ("dnn", "dnn_adv", "pfn", *PARTICLE_TAGGERS)

# --------------------------------------------------------------------------- features


def constituent_mass2(pid: Any) -> Any:
    """Squared mass (GeV^2) of each constituent from its PDG id; 0 for unknown ids."""
    pid = abs(pid)
    return sum((pid == code) * mass**2 for code, mass in PDG_MASS.items())


def jet_features(parts: Any, mask: Any, n_const: Any, xp: ModuleType = np) -> Any:
    """The six DNN features of each jet from its constituents (``xp`` is numpy or torch).

    Four-momenta from (pT, rapidity, azimuth) relative to the jet axis and the mass of each
    particle species (the jet mass is invariant under the boost and rotation to that axis);
    ``n_const`` is the full constituent count. Angles are measured from the jet axis.
    """
    pt = parts[..., 0] * mask
    dy, dphi = parts[..., 1], parts[..., 2]
    mt = xp.sqrt(pt**2 + constituent_mass2(parts[..., 3]) * mask + 1e-12) * mask
    px, py = pt * xp.cos(dphi), pt * xp.sin(dphi)
    pz, energy = mt * xp.sinh(dy), mt * xp.cosh(dy)
    m2 = energy.sum(axis=1) ** 2 - px.sum(axis=1) ** 2 - py.sum(axis=1) ** 2 - pz.sum(axis=1) ** 2
    total = pt.sum(axis=1)
    z = pt / total[:, None]
    r = xp.sqrt(dy**2 + dphi**2 + 1e-12) / JET_R
    return xp.stack(
        [
            xp.sqrt(xp.clip(m2, 1e-6, None)),
            n_const,
            xp.sqrt((pt**2).sum(axis=1)) / total,
            JET_R * (z * r).sum(axis=1),  # girth
            (z * xp.sqrt(r)).sum(axis=1),  # LHA, lambda_0.5
            (z * r**2).sum(axis=1),  # lambda_2
        ],
        axis=1,
    )


def features_of(sample: dict[str, np.ndarray]) -> np.ndarray:
    parts = sample["parts"].astype(np.float64)
    mask = sample["mask"].astype(np.float64)
    return jet_features(parts, mask, sample["n_const"].astype(np.float64)).astype(np.float32)


def propagated_envelope(sample: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The DNN feature envelope implied by the constituent envelope.

    For each jet and feature, the largest first-order change when every constituent moves
    within one sigma, ``sum_i |df/dx_i| sigma_i``, relative to the feature's value; the
    envelope takes the median over jets, rounded up to two significant digits.
    """
    parts = torch.from_numpy(sample["parts"].astype(np.float64))
    mask = torch.from_numpy(sample["mask"].astype(np.float64))
    moving = parts[..., :3].clone().requires_grad_(True)
    values = jet_features(
        torch.cat([moving, parts[..., 3:]], dim=-1),
        mask,
        torch.from_numpy(sample["n_const"].astype(np.float64)),
        xp=torch,
    )
    sigma = torch.stack(
        [
            PARTICLE_ENVELOPE["pt"]["relative"] * parts[..., 0],
            torch.full_like(parts[..., 1], PARTICLE_ENVELOPE["dy"]["absolute"]),
            torch.full_like(parts[..., 2], PARTICLE_ENVELOPE["dphi"]["absolute"]),
        ],
        dim=-1,
    ) * mask.unsqueeze(-1)
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(FEATURES):
        if name == "n_const":
            out[name] = {"frozen": True}
            continue
        (grad,) = torch.autograd.grad(values[:, k].sum(), moving, retain_graph=True)
        worst = (grad.abs() * sigma).sum(dim=(1, 2)) / values[:, k].abs().clamp_min(1e-12)
        median = float(np.median(worst.detach().numpy()))
        digits = 1 - math.floor(math.log10(median))
        entry: dict[str, Any] = {"relative": math.ceil(median * 10**digits) / 10**digits}
        entry["min"] = 0.0
        if name == "ptd":
            entry["max"] = 1.0
        out[name] = entry
    return out


# --------------------------------------------------------------------------- models


class FeatureDNN(torch.nn.Module):
    """An MLP on standardised jet features; two logits (gluon, quark)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(len(FEATURES), 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 2),
        )

    def forward(self, jets: torch.Tensor) -> torch.Tensor:
        return self.net((jets - self.mean) / self.std)


def mlp(sizes: list[int], last_activation: bool) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class PFN(torch.nn.Module):
    """Particle-flow network: F(sum over real particles of Phi(particle)), two logits.

    Each particle enters as its log pT fraction, its rapidity and azimuth relative to the jet
    axis in units of R, and five identity flags (photon, charged hadron, neutral hadron,
    electron, muon) read from its PDG id.
    """

    def __init__(self, latent: int = 32) -> None:
        super().__init__()
        self.phi = mlp([8, 64, 64, latent], last_activation=True)
        self.head = mlp([latent, 64, 64, 2], last_activation=False)

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        particle = constituent_inputs(parts, mask)
        latent = (self.phi(particle) * mask.unsqueeze(-1)).sum(dim=1) / 32.0
        return self.head(latent)


def constituent_inputs(parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(jets, particles, 8): log pT fraction, rapidity and azimuth in units of R, and five
    identity flags from the PDG id (photon, charged hadron, neutral hadron, electron, muon)."""
    pt, dy, dphi, pid = parts[..., 0], parts[..., 1], parts[..., 2], parts[..., 3].abs()
    total = (pt * mask).sum(dim=1, keepdim=True) + 1e-6
    log_z = (torch.log(pt / total + 1e-6) + 4.0) / 2.0
    flags = [
        (pid == 22).float(),
        (pid == 211).float() + (pid == 321).float() + (pid == 2212).float(),
        (pid == 130).float() + (pid == 2112).float(),
        (pid == 11).float(),
        (pid == 13).float(),
    ]
    return torch.stack([log_z, dy / JET_R, dphi / JET_R, *flags], dim=-1)


def architectures() -> ModuleType:
    """``architectures.py`` beside this script, loaded by path (the name is a common one)."""
    name = "qg_architectures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "architectures.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class ConstituentTagger(torch.nn.Module):
    """A tagger of ``architectures.py`` (``transformer`` or ``edgeconv``) on the PFN's
    per-constituent inputs; its (y, phi) neighbourhoods and Delta R are in units of R."""

    def __init__(self, architecture: str) -> None:
        super().__init__()
        self.net = architectures().build(architecture, features=8, coords=(1, 2))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(constituent_inputs(parts, mask), mask)


# --------------------------------------------------------------------------- training


def minibatches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, size):
        yield order[start : start + size]


def fit(
    model: torch.nn.Module,
    train: tuple[dict[str, torch.Tensor], torch.Tensor],
    valid: tuple[dict[str, torch.Tensor], torch.Tensor],
    epochs: int,
    seed: int,
    adversarial: dict[str, Any] | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    trim_padding: bool = False,
) -> dict[str, float]:
    """Adam on cross-entropy; keeps the weights of the epoch with the best validation loss.

    With ``adversarial`` (keyword arguments of ``adversarial_batch`` plus ``weight``), each
    batch's loss is ``(1 - weight) * CE(clean) + weight * CE(adversarial)``. With
    ``trim_padding``, each batch of ``parts`` and ``mask`` is cut to its longest jet (for
    models that ignore padding: the same loss, at a fraction of the cost).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    inputs, labels = train
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    best, best_state = math.inf, None
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for rows in minibatches(len(labels), batch_size, generator):
            x = {k: v[rows] for k, v in inputs.items()}
            if trim_padding:
                width = max(int(x["mask"].sum(1).max()), 1)  # real constituents come first
                x = {k: v[:, :width] for k, v in x.items()}
            y = labels[rows]
            if adversarial is not None:
                options = dict(adversarial)
                weight = options.pop("weight")
                x_adv = adversarial_batch(model, x, y, **options)
                loss = (1 - weight) * F.cross_entropy(model(**x), y) + weight * F.cross_entropy(
                    model(**x_adv), y
                )
            else:
                loss = F.cross_entropy(model(**x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            loss = float(F.cross_entropy(model(**valid[0]), valid[1]))
        if loss < best:
            best, best_state = loss, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"valid_loss": best, "seconds": time.perf_counter() - started}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from robustcheck.stats import auc as robust_auc

    return float(robust_auc(labels, scores))


def quark_probability(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(*inputs.values()), dim=1)[:, 1].numpy()


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def save_program(
    model: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    dynamic: dict[str, dict[int, Any]],
) -> torch.nn.Module:
    """Write ``path`` (a ``torch.export`` program, .pt2) and return it loaded back."""
    with quiet(), torch.no_grad():
        program = torch.export.export(model.eval(), example, dynamic_shapes=dynamic)
        torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()


def export(model: torch.nn.Module, inputs: dict[str, torch.Tensor], out: Path, name: str) -> float:
    """Write NAME.pt2 (torch.export) and NAME.onnx (dynamic batch); the largest difference of
    their quark probabilities from the torch model's on ``inputs``."""
    import onnxruntime

    names = list(inputs)
    example = tuple(v[:8] for v in inputs.values())
    batch = torch.export.Dim("batch", min=2)
    program = save_program(model, example, out / f"{name}.pt2", {n: {0: batch} for n in names})
    with quiet():
        torch.onnx.export(
            model,
            example,
            str(out / f"{name}.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    reference = quark_probability(model, inputs)
    with torch.no_grad(), quiet():
        scripted = torch.softmax(program(*inputs.values()), 1)
    session = onnxruntime.InferenceSession(
        str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    logits = session.run(None, {n: v.numpy() for n, v in inputs.items()})[0]
    onnx_p = torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy()
    diff = max(
        float(np.abs(scripted[:, 1].numpy() - reference).max()),
        float(np.abs(onnx_p - reference).max()),
    )
    if diff > 1e-4:
        raise RuntimeError(f"{name}: exported models differ from torch by {diff:.3g}")
    return diff


def batched_quark_probability(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], batch: int = 256
) -> np.ndarray:
    """``quark_probability`` in batches (attention over 128 slots is large for many jets)."""
    n = len(next(iter(inputs.values())))
    return np.concatenate(
        [
            quark_probability(model, {k: v[start : start + batch] for k, v in inputs.items()})
            for start in range(0, n, batch)
        ]
    )


def onnx_probability(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = []
    n = len(next(iter(inputs.values())))
    for start in range(0, n, 256):
        feed = {k: v[start : start + 256].numpy() for k, v in inputs.items()}
        parts.append(torch.softmax(torch.from_numpy(session.run(None, feed)[0]), 1)[:, 1])
    return torch.cat(parts).numpy()


def export_constituent_tagger(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], out: Path, name: str
) -> dict[str, Any]:
    """Write NAME.pt2 (torch.export) and NAME.onnx with torch's default ONNX exporter
    (``dynamo=True`` in torch 2.14), dynamic in the jets and the particles. Where that export
    disagrees with torch in onnxruntime (NaN or more than 1e-4), the legacy TorchScript-based
    exporter (opset 17) writes it instead, and the reason is returned."""
    names = list(inputs)
    example = tuple(v[:8] for v in inputs.values())
    reference = batched_quark_probability(model, inputs)
    jets = torch.export.Dim("jets", min=2)
    particles = torch.export.Dim("particles", min=16, max=inputs["parts"].shape[1])
    axes = {0: jets, 1: particles}
    program = save_program(model, example, out / f"{name}.pt2", {n: axes for n in names})
    with torch.no_grad(), quiet():
        exported = batched_quark_probability(program, inputs)
    torch_diff = float(np.abs(exported - reference).max())
    if not torch_diff <= 1e-4:
        raise RuntimeError(f"{name}: the .pt2 program differs from torch by {torch_diff:.3g}")
    target = out / f"{name}.onnx"
    exporter, note = "dynamo", ""
    try:
        with quiet():
            torch.onnx.export(
                model,
                example,
                str(target),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes={"parts": axes, "mask": axes},
            )
        onnx_diff = float(np.abs(onnx_probability(target, inputs) - reference).max())
        if not onnx_diff <= 1e-4:
            note = f"the default (dynamo) export differs from torch by {onnx_diff:.3g}"
    except Exception as exc:  # the exporter's own failure: say which
        note = f"the default (dynamo) export failed: {type(exc).__name__}: {str(exc)[:200]}"
    if note:
        exporter = "legacy"
        with quiet():
            torch.onnx.export(
                model,
                example,
                str(target),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={
                    **{n: {0: "jets", 1: "particles"} for n in names},
                    "logits": {0: "jets"},
                },
                opset_version=17,
                dynamo=False,
            )
        onnx_diff = float(np.abs(onnx_probability(target, inputs) - reference).max())
        if not onnx_diff <= 1e-4:
            raise RuntimeError(f"{name}: both ONNX exports differ from torch ({note})")
    return {"exporter": exporter, "note": note, "diff": max(torch_diff, onnx_diff)}


# --------------------------------------------------------------------------- specs


def toml_table(entry: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v)

    return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in entry.items()) + " }"


def spec_text(
    title: str,
    model_file: str,
    data_prefix: str,
    inputs: dict[str, str],
    input_block: str,
    envelope: dict[str, dict[str, Any]],
    envelope_name: str,
    envelope_note: str,
    loss_events: int | None,
    grid: tuple[str, str] | None,
    output: str = '"logits"',
) -> str:
    """A spec for one tagger, its test samples and the shared checks."""
    mapping = "{ " + ", ".join(f'{k} = "{v}"' for k, v in inputs.items()) + " }"
    width = max(len(k) for k in envelope)
    lines = [f"{k:<{width}} = {toml_table(v)}" for k, v in envelope.items()]
    t = THRESHOLDS
    loss_events_line = f"max_events = {loss_events}\n" if loss_events else ""
    if grid:
        loss_events_line += f'grid = ["{grid[0]}", "{grid[1]}"]\n'

    return f"""# {title}
# Written by train.py; the README explains every threshold.
version = 1

[model]
path = "{model_file}"
output = {output}
scores = "logits"
signal_class = 1                # quark jets are the signal

[data.nominal]                  # held-out jets of the nominal PYTHIA 8 sample
path = "{data_prefix}_nominal.npz"
labels = "label"
inputs = {mapping}

[data.alternative]              # the alternative shower and hadronisation (generate.py)
path = "{data_prefix}_alternative.npz"
labels = "label"
inputs = {mapping}

{input_block}
{f"[envelope.{envelope_name}]":<31} # {envelope_note}
{chr(10).join(lines)}

[attacks.pgd_1sigma]
method = "pgd"
epsilon = {EPSILON}
steps = 20
seed = 1

[attacks.hidden_1sigma]         # moves only the jets it fools, keeps the histograms nominal
method = "constrained_pgd"
epsilon = {EPSILON}
steps = 20
seed = 1

[[checks]]
name = "fooling rate within 1 sigma (pgd)"
type = "fooling_rate"
attack = "pgd_1sigma"
max = {t["fooling_rate"]}

[[checks]]
name = "fooling rate within 1 sigma (constrained pgd)"
type = "fooling_rate"
attack = "hidden_1sigma"
max = {t["fooling_rate"]}

[[checks]]
name = "pgd leaves the input histograms unchanged"
type = "invariance"
attack = "pgd_1sigma"
ks_min_pvalue = {t["ks_min_pvalue"]}
chi2_min_pvalue = {t["chi2_min_pvalue"]}

[[checks]]
name = "constrained pgd leaves the input histograms unchanged"
type = "invariance"
attack = "hidden_1sigma"
ks_min_pvalue = {t["ks_min_pvalue"]}
chi2_min_pvalue = {t["chi2_min_pvalue"]}

[[checks]]
name = "pgd unseen in control regions of 1e6 jets"
type = "invariance"
attack = "pgd_1sigma"
ks_min_pvalue = {t["ks_min_pvalue"]}
chi2_min_pvalue = {t["chi2_min_pvalue"]}
by_class = true                 # quark- and gluon-enriched control regions
regions = {{ quark_like = "score > 0.5" }}
control_region_events = {t["control_region_events"]}

[[checks]]
name = "constrained pgd unseen in control regions of 1e6 jets"
type = "invariance"
attack = "hidden_1sigma"
ks_min_pvalue = {t["ks_min_pvalue"]}
chi2_min_pvalue = {t["chi2_min_pvalue"]}
by_class = true
regions = {{ quark_like = "score > 0.5" }}
control_region_events = {t["control_region_events"]}

[[checks]]
name = "resilience to the alternative generator"
type = "resilience"
max_auc_change_percent = {t["max_auc_change_percent"]}
min_auc = {t["min_auc"]}

[[checks]]
name = "flat loss within 1 sigma"
type = "loss_surface"
epsilon = {EPSILON}
points = 9
{loss_events_line}max_loss_increase = {t["max_loss_increase"]}
"""


DNN_INPUT_BLOCK = f"""[inputs.jets]
features = [{", ".join(f'"{f}"' for f in FEATURES)}]
"""

PFN_INPUT_BLOCK = f"""[inputs.parts]
features = [{", ".join(f'"{f}"' for f in PARTICLE_FEATURES)}]
mask = "mask"
"""

# the transformer and EdgeConv ignore padding (masked attention keys, far-away padded
# neighbours, masked means), so robustcheck may cut each batch to its longest jet: it checks
# that the scores agree before it does
TRIMMED_INPUT_BLOCK = (
    PFN_INPUT_BLOCK + "trim_padding = true              # verified by robustcheck\n"
)


# --------------------------------------------------------------------------- pipeline


def load(path: Path) -> dict[str, np.ndarray]:
    """A generated sample, with the particle arrays as float32."""
    with np.load(path) as data:
        out = {k: data[k] for k in data.files if k != "settings"}
    out["parts"] = out["parts"].astype(np.float32)
    out["mask"] = out["mask"].astype(np.float32)
    return out


def split(n: int, seed: int, fractions: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Shuffled train, validation and test indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_valid = int(fractions[0] * n), int(fractions[1] * n)
    return order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]


def run(
    samples: Path,
    out: Path,
    *,
    dnn_epochs: int = 40,
    pfn_epochs: int = 25,
    transformer_epochs: int = 20,
    edgeconv_epochs: int = 20,
    seed: int = 1,
    check: bool | Sequence[str] = True,
    loss_events: int | None = 1000,
    verbose: bool = True,
) -> dict[str, Any]:
    """The whole example after generation; returns the summary it prints.

    ``check``: run every tagger's spec (True), none (False) or those of the taggers named.
    When any runs, the tables the READMEs quote are written to ``out/results.md``.
    """
    say = print if verbose else (lambda *a, **k: None)
    checked = checked_taggers(check)
    out.mkdir(parents=True, exist_ok=True)
    nominal, alternative = load(samples / "nominal.npz"), load(samples / "alternative.npz")
    train_idx, valid_idx, test_idx = split(len(nominal["label"]), seed, (0.6, 0.1))
    say(
        f"{len(train_idx)} training, {len(valid_idx)} validation, {len(test_idx)} test jets; "
        f"{len(alternative['label'])} alternative jets"
    )
    features = features_of(nominal)
    alt_features = features_of(alternative)
    labels = torch.from_numpy(nominal["label"])
    envelope_table = propagated_envelope({k: v[train_idx] for k, v in nominal.items()})
    say(
        "feature envelope propagated from the constituents: "
        + ", ".join(
            f"{k} {v['relative']:.3g}" for k, v in envelope_table.items() if "relative" in v
        )
    )

    def rows(array: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[idx]))

    summary: dict[str, Any] = {"envelope": envelope_table, "models": {}}
    mean, std = features[train_idx].mean(0), features[train_idx].std(0)
    dnn_data = {
        part: ({"jets": rows(features, idx)}, labels[idx])
        for part, idx in (("train", train_idx), ("valid", valid_idx))
    }
    np.savez(out / "dnn_nominal.npz", features=features[test_idx], label=nominal["label"][test_idx])
    np.savez(out / "dnn_alternative.npz", features=alt_features, label=alternative["label"])
    envelope = make_envelope({"jets": envelope_table})
    for name, adversarial in (
        ("dnn", None),
        (
            "dnn_adv",
            {"envelope": envelope, "epsilon": EPSILON, "method": "pgd", "steps": 5, "weight": 0.5},
        ),
    ):
        torch.manual_seed(seed)
        model = FeatureDNN(mean, std)
        info = fit(model, dnn_data["train"], dnn_data["valid"], dnn_epochs, seed, adversarial)
        test_inputs = {"jets": rows(features, test_idx)}
        diff = export(model, test_inputs, out, name)
        title = "Quark/gluon DNN on six jet-substructure features" + (
            ", adversarially trained (PGD, 1 sigma)" if adversarial else ""
        )
        (out / f"{name}.robust.toml").write_text(
            spec_text(
                title,
                f"{name}.onnx",
                "dnn",
                {"jets": "features"},
                DNN_INPUT_BLOCK,
                envelope_table,
                "jets",
                "the constituent envelope, propagated (train.py)",
                None,
                LOSS_GRID["dnn"],
            )
        )
        area = auc(nominal["label"][test_idx], quark_probability(model, test_inputs))
        say(
            f"{name}: test AUC {area:.4f}, trained in {info['seconds']:.0f} s, "
            f"export agrees to {diff:.1e}"
        )
        summary["models"][name] = {"auc": area, "train_seconds": info["seconds"]}

    parts, mask = nominal["parts"], nominal["mask"]
    pfn_data = {
        part: ({"parts": rows(parts, idx), "mask": rows(mask, idx)}, labels[idx])
        for part, idx in (("train", train_idx), ("valid", valid_idx))
    }
    torch.manual_seed(seed)
    model = PFN()
    info = fit(model, pfn_data["train"], pfn_data["valid"], pfn_epochs, seed, lr=1e-3)
    test_inputs = {"parts": rows(parts, test_idx), "mask": rows(mask, test_idx)}
    diff = export(model, test_inputs, out, "pfn")
    np.savez(
        out / "pfn_nominal.npz",
        parts=parts[test_idx],
        mask=mask[test_idx],
        label=nominal["label"][test_idx],
    )
    np.savez(
        out / "pfn_alternative.npz",
        parts=alternative["parts"],
        mask=alternative["mask"],
        label=alternative["label"],
    )
    (out / "pfn.robust.toml").write_text(
        spec_text(
            "Quark/gluon particle-flow network on the jet constituents",
            "pfn.onnx",
            "pfn",
            {"parts": "parts", "mask": "mask"},
            PFN_INPUT_BLOCK,
            PARTICLE_ENVELOPE,
            "parts",
            "per constituent: 2% pT scale, 3 mrad in angle",
            loss_events,
            LOSS_GRID["pfn"],
        )
    )
    area = auc(nominal["label"][test_idx], quark_probability(model, test_inputs))
    say(
        f"pfn: test AUC {area:.4f}, trained in {info['seconds']:.0f} s, export agrees to {diff:.1e}"
    )
    summary["models"]["pfn"] = {"auc": area, "train_seconds": info["seconds"]}
    epochs = {"transformer": transformer_epochs, "edgeconv": edgeconv_epochs}
    titles = {
        "transformer": "Quark/gluon Particle-Transformer-like tagger on the jet constituents",
        "edgeconv": "Quark/gluon ParticleNet-like EdgeConv tagger on the jet constituents",
    }
    for name in PARTICLE_TAGGERS:
        torch.manual_seed(seed)
        model = ConstituentTagger(name)
        info = fit(
            model,
            pfn_data["train"],
            pfn_data["valid"],
            epochs[name],
            seed,
            batch_size=32,
            trim_padding=True,
        )
        exported = export_constituent_tagger(model, test_inputs, out, name)
        (out / f"{name}.robust.toml").write_text(
            spec_text(
                titles[name],
                f"{name}.pt2",
                "pfn",
                {"parts": "parts", "mask": "mask"},
                TRIMMED_INPUT_BLOCK,
                PARTICLE_ENVELOPE,
                "parts",
                "per constituent: 2% pT scale, 3 mrad in angle",
                loss_events,
                None,
                output="0                      # the program's one output tensor",
            )
        )
        area = auc(nominal["label"][test_idx], batched_quark_probability(model, test_inputs))
        onnx_note = f" ({exported['note']})" if exported["note"] else ""
        say(
            f"{name}: test AUC {area:.4f}, trained in {info['seconds']:.0f} s, exports agree to "
            f"{exported['diff']:.1e}; ONNX by the {exported['exporter']} exporter{onnx_note}"
        )
        summary["models"][name] = {
            "auc": area,
            "train_seconds": info["seconds"],
            "onnx_exporter": exported["exporter"],
            "onnx_note": exported["note"],
        }
    if checked:
        summary["checks"] = check_specs(out, say, checked)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        settings = settings_block(
            samples,
            {
                "seed": seed,
                "dnn-epochs": dnn_epochs,
                "pfn-epochs": pfn_epochs,
                "transformer-epochs": transformer_epochs,
                "edgeconv-epochs": edgeconv_epochs,
                "loss-events": loss_events or 0,
            },
            checked,
            f"{len(train_idx)} training, {len(valid_idx)} validation, {len(test_idx)} test "
            f"jets; {len(alternative['label'])} alternative jets",
        )
        (out / "results.md").write_text(results_markdown(summary["checks"], settings))
    return summary


def checked_taggers(check: bool | Sequence[str]) -> tuple[str, ...]:
    """The taggers whose specs ``run(check=...)`` runs, in the order of ``TAGGERS``."""
    if isinstance(check, bool):
        return TAGGERS if check else ()
    unknown = sorted(set(check) - set(TAGGERS))
    if unknown:
        raise ValueError(
            f"unknown tagger(s) {', '.join(unknown)}: choose from {', '.join(TAGGERS)}"
        )
    return tuple(name for name in TAGGERS if name in check)


def check_specs(out: Path, say: Any, taggers: Sequence[str] = TAGGERS) -> dict[str, Any]:
    """Run the specs of ``out`` (those of ``taggers``) with robustcheck; print each verdict, a
    summary table and, when both DNNs ran, their loss surfaces side by side (arrays in
    ``loss_surfaces.npz``)."""
    from robustcheck.core import SpecRun
    from robustcheck.loss_surface import compare_loss_surfaces
    from robustcheck.sanity import SanityError

    results: dict[str, Any] = {}
    runs = {}
    for name in taggers:
        started = time.perf_counter()
        spec_file = out / f"{name}.robust.toml"
        run = SpecRun.from_path(spec_file, device="cpu")
        say(f"\n== {name}.robust.toml")
        try:
            outcomes = run.run()
        except SanityError as exc:  # e.g. too few epochs: one class for every jet
            say(f"SANITY GATE FAILED  {exc}")
            reason = str(exc).splitlines()[0].replace(f"{spec_file}: ", "")
            results.setdefault("sanity_failures", {})[name] = reason
            continue
        runs[name] = run
        results[name] = []
        for result in outcomes:
            verdict = "PASSED" if result.passed else "FAILED"
            say(f"{verdict}  {result.name}: {result.summary}")
            results[name].append(
                {
                    "name": result.name,
                    "type": result.type,
                    "passed": result.passed,
                    "figures": result.figures,
                }
            )
        results[name + "_seconds"] = seconds = time.perf_counter() - started
        say(f"({seconds:.0f} s)")
    say("\n" + "\n".join(summary_table(results)))
    say("\n" + "\n".join(detectability_table(results)))
    if not {"dnn", "dnn_adv"} <= set(runs):
        return results
    nominal, robust = compare_loss_surfaces(
        runs["dnn"], runs["dnn_adv"], epsilon=EPSILON, points=9, grid=LOSS_GRID["dnn"]
    )
    np.savez(
        out / "loss_surfaces.npz",
        offsets=nominal.offsets,
        features=np.array(nominal.features),
        dnn=nominal.profiles,
        dnn_adv=robust.profiles,
        dnn_nominal_loss=nominal.nominal,
        dnn_adv_nominal_loss=robust.nominal,
        dnn_grid=nominal.grid,
        dnn_adv_grid=robust.grid,
    )
    say(f"\nmean loss rise within {EPSILON:g} sigma (nats per jet): dnn vs dnn_adv")
    for feature, a, b in zip(nominal.features, nominal.increase(), robust.increase(), strict=True):
        say(f"  {feature:<9} {a:.5f}  {b:.5f}")
    say(
        f"  grid {'+'.join(LOSS_GRID['dnn'] or ())}: "
        f"{nominal.grid_increase():.5f}  {robust.grid_increase():.5f}"
    )
    results["loss_surfaces"] = {
        "features": nominal.features,
        "dnn": nominal.increase().tolist(),
        "dnn_adv": robust.increase().tolist(),
        "grid": list(LOSS_GRID["dnn"] or ()),
        "grid_dnn": nominal.grid_increase(),
        "grid_dnn_adv": robust.grid_increase(),
    }
    return results


def checked_names(results: dict[str, Any]) -> list[str]:
    """The taggers whose specs ran, in the order of ``TAGGERS``."""
    return [name for name in TAGGERS if name in results]


def sanity_rows(results: dict[str, Any]) -> list[str]:
    """A row per tagger whose spec stopped at a sanity gate, with the gate's reason."""
    failures = results.get("sanity_failures", {})
    return [
        f"| {name} | sanity gate failed: {failures[name]} |" for name in TAGGERS if name in failures
    ]


def check_figures(results: dict[str, Any], name: str, type_: str, word: str = "") -> dict[str, Any]:
    """The figures of tagger ``name``'s first check of ``type_`` whose name holds ``word``."""
    return next(r["figures"] for r in results[name] if r["type"] == type_ and word in r["name"])


def rate_cell(f: dict[str, Any], digits: int) -> str:
    """A fooling rate in percent with its 95% CL, the interval to ``digits`` decimals."""
    low, high = 100 * f["ci_low"], 100 * f["ci_high"]
    return f"{100 * f['fooling_rate']:.2f}% ({low:.{digits}f}-{high:.{digits}f})"


def summary_table(results: dict[str, Any]) -> list[str]:
    """One markdown row per tagger with the figures the README quotes."""

    def figures(name: str, type_: str, word: str = "") -> dict[str, Any]:
        return check_figures(results, name, type_, word)

    def rate(f: dict[str, Any]) -> str:
        return rate_cell(f, 2)

    lines = [
        "| tagger | AUC nominal | AUC alternative | resilience | fooling rate pgd (95% CL) | "
        "fooling rate constrained | min KS p pgd / constrained | min chi2 p pgd / constrained "
        "| loss rise | checks passed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in checked_names(results):
        res = figures(name, "resilience")
        pgd, hidden = (
            figures(name, "fooling_rate", "(pgd)"),
            figures(name, "fooling_rate", "constr"),
        )
        inv_pgd = figures(name, "invariance", "pgd leaves")
        inv_hidden = figures(name, "invariance", "constrained pgd leaves")
        loss = figures(name, "loss_surface")
        passed = sum(r["passed"] for r in results[name])
        lines.append(
            f"| {name} | {res['auc_nominal']:.4f} | {res['auc_alternative']:.4f} | "
            f"{res['auc_change_percent']:.2f}% ± {res['auc_change_percent_error']:.2f}% | "
            f"{rate(pgd)} | {rate(hidden)} | "
            f"{inv_pgd['min_ks_pvalue']:.2g} / {inv_hidden['min_ks_pvalue']:.2g} | "
            f"{inv_pgd['min_chi2_pvalue']:.2g} / {inv_hidden['min_chi2_pvalue']:.2g} | "
            f"{loss['loss_increase']:.4f} | {passed}/{len(results[name])} |"
        )
    return lines + sanity_rows(results)


REGIONS = ("all", "class 0", "class 1", "quark_like")


def detectability_table(results: dict[str, Any]) -> list[str]:
    """Per tagger and attack, the fewest jets per sample at which some test of the control-
    region check (inclusive, per class, quark-like) would see the attack's shift."""

    def smallest(f: dict[str, Any], region: str) -> str:
        values = [
            float(v)
            for k, v in f.items()
            if k.startswith("events_to_detect/") and k.split("/")[2] == region
        ]
        finite = [v for v in values if math.isfinite(v)]
        return f"{min(finite):,.0f}" if finite else ("no shift" if values else "-")

    lines = [
        "| tagger | attack | " + " | ".join(f"events_to_detect: {r}" for r in REGIONS) + " |",
        "|---|---|" + "---|" * len(REGIONS),
    ]
    for name in checked_names(results):
        for attack in ("pgd", "constrained pgd"):
            f = next(
                r["figures"]
                for r in results[name]
                if r["name"].startswith(f"{attack} unseen in control regions")
            )
            cells = " | ".join(smallest(f, region) for region in REGIONS)
            lines.append(f"| {name} | {attack} | {cells} |")
    return lines


def overview_table(results: dict[str, Any]) -> list[str]:
    """The main README's short table: AUCs, both fooling rates with their 95% CL, verdicts."""

    def figures(name: str, type_: str, word: str = "") -> dict[str, Any]:
        return check_figures(results, name, type_, word)

    def rate(f: dict[str, Any]) -> str:
        return rate_cell(f, 1)

    lines = [
        "| tagger | AUC nominal / alternative | fooling rate within 1 sigma, pgd (95% CL) "
        "| constrained pgd (95% CL) | checks passed |",
        "|---|---|---|---|---|",
    ]
    for name in checked_names(results):
        res = figures(name, "resilience")
        pgd = figures(name, "fooling_rate", "(pgd)")
        hidden = figures(name, "fooling_rate", "constr")
        passed = sum(r["passed"] for r in results[name])
        lines.append(
            f"| {name} | {res['auc_nominal']:.4f} / {res['auc_alternative']:.4f} | {rate(pgd)} "
            f"| {rate(hidden)} | {passed}/{len(results[name])} |"
        )
    return lines + sanity_rows(results)


def loss_surface_table(results: dict[str, Any]) -> list[str]:
    """The two DNNs' mean loss rise within 1 sigma (nats per jet), per move, side by side."""
    surfaces = results.get("loss_surfaces")
    if surfaces is None:
        return []
    lines = ["| move | dnn | dnn_adv |", "|---|---|---|"]
    for feature, a, b in zip(
        surfaces["features"], surfaces["dnn"], surfaces["dnn_adv"], strict=True
    ):
        lines.append(f"| {feature} | {a:.5f} | {b:.5f} |")
    if surfaces["grid"]:
        lines.append(
            f"| {' and '.join(surfaces['grid'])} together | {surfaces['grid_dnn']:.5f} "
            f"| {surfaces['grid_dnn_adv']:.5f} |"
        )
    return lines


TABLE_MARKER = "robustcheck:table"  # quote.py copies each marked block into the READMEs


def marked(name: str, lines: list[str]) -> str:
    """One table of ``results.md`` between its start and end markers."""
    body = "\n".join(lines)
    return f"<!-- {TABLE_MARKER} {name} -->\n{body}\n<!-- /{TABLE_MARKER} {name} -->\n"


def settings_block(
    samples: Path, options: dict[str, Any], checked: Sequence[str], jets: str
) -> list[str]:
    """How to reproduce a run: the command line with every option spelled out, the torch
    version and thread count, and the jets it used (no timing: the block must not change
    between two runs with the same settings)."""
    where = samples.resolve()
    shown = where.relative_to(HERE.resolve()) if where.is_relative_to(HERE.resolve()) else samples
    flags = " ".join(f"--{k} {v}" for k, v in options.items())
    if tuple(checked) != TAGGERS:
        flags += f" --check-taggers {','.join(checked)}"
    threads = torch.get_num_threads()
    return [
        "```bash",
        f"python train.py --samples {shown.as_posix()} --out OUT {flags}",
        "```",
        "",
        f"torch {torch.__version__.split('+')[0]}, {threads} thread{'s' * (threads != 1)}; {jets}.",
    ]


def results_markdown(results: dict[str, Any], settings: list[str]) -> str:
    """``results.md``: every table the READMEs quote, each between stable markers."""
    tables = {
        "settings": settings,
        "overview": overview_table(results),
        "summary": summary_table(results),
        "detectability": detectability_table(results),
        "loss_surfaces": loss_surface_table(results),
    }
    head = (
        "# What train.py measured\n\n"
        "Written by `train.py`. The READMEs quote these tables between the same markers, "
        "followed by `from RUN`; `python quote.py` refreshes them (see the example's README).\n"
    )
    return head + "".join(f"\n{marked(name, lines)}" for name, lines in tables.items() if lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=Path,
        default=HERE / "out" / "samples",
        help="folder with nominal.npz and alternative.npz (generate.py)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--dnn-epochs", type=int, default=40)
    parser.add_argument("--pfn-epochs", type=int, default=25)
    parser.add_argument("--transformer-epochs", type=int, default=20)
    parser.add_argument("--edgeconv-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loss-events",
        type=int,
        default=1000,
        help="test jets of the particle taggers' loss-surface scans (0: all; default 1000)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1, the fastest on a busy machine; 0: torch's own choice)",
    )
    parser.add_argument("--no-check", action="store_true", help="do not run the specs")
    parser.add_argument(
        "--check-taggers",
        default=",".join(TAGGERS),
        help="comma-separated taggers whose specs are run (default: all)",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    chosen = [name.strip() for name in args.check_taggers.split(",") if name.strip()]
    try:
        check = False if args.no_check else checked_taggers(chosen)
    except ValueError as exc:
        parser.error(f"--check-taggers: {exc}")
    run(
        args.samples,
        args.out,
        dnn_epochs=args.dnn_epochs,
        pfn_epochs=args.pfn_epochs,
        transformer_epochs=args.transformer_epochs,
        edgeconv_epochs=args.edgeconv_epochs,
        seed=args.seed,
        check=check,
        loss_events=args.loss_events or None,
    )


if __name__ == "__main__":
    main()
