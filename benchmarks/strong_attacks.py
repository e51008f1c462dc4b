"""How strong and how fast: PGD-20, PGD-100, APGD-20/50 and the ensemble, with torchattacks'
APGD as a cross-check, on the quickstart tagger, an MLP and a DeepSets tagger.

Every attack runs through ``robustcheck.engine.run_attack`` on the correctly classified events
(what a fooling rate needs: an event stops once fooled), in the same epsilon-sigma box. The
fooling rate is the share of those events whose decision flips; the time is the attack's own
(the nominal and adversarial evaluations are the same for all and left out).

torchattacks' ``APGD`` (loss "ce"; its "dlr" needs three classes) attacks the same box through
the rescaling of ``compare_peers.py``: u in [0, 1]^d, x = clamp(x0 + (2u - 1) eps sigma, lower,
upper) with a straight-through clamp, ``eps = 0.5`` around u0 = 0.5. It has no early stop, so
its time is that of the whole budget on every attacked event.

    python benchmarks/strong_attacks.py --threads 1
    python benchmarks/strong_attacks.py --models mlp --events 2000 --epsilon 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import tomllib
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from compare_peers import UnitBox  # noqa: E402

from robustcheck import registry  # noqa: E402
from robustcheck.attacks.base import Attack  # noqa: E402
from robustcheck.core import SpecRun  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import evaluate, run_attack  # noqa: E402
from robustcheck.envelope import Envelope, Inputs  # noqa: E402
from robustcheck.spec import AttackSpec, parse_spec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATTACKS: dict[str, tuple[str, dict[str, object]]] = {
    "PGD-20": ("pgd", {"steps": 20}),
    "PGD-100": ("pgd", {"steps": 100}),
    "APGD-20": ("apgd", {"steps": 20}),
    "APGD-50": ("apgd", {"steps": 50}),
    "APGD-20 ce": ("apgd", {"steps": 20, "loss": "ce"}),
    "SPSA-20": ("spsa", {"steps": 20}),
    "ensemble": ("ensemble", {"attacks": ["apgd_ce", "apgd_margin", "spsa"]}),
}


def make_attack(method: str, options: dict[str, object], epsilon: float, seed: int) -> Attack:
    table = {"epsilon": epsilon, "seed": seed, **options}
    spec = AttackSpec(method, method, registry.attack_options(method, table, "bench", ""))
    return registry.attacks()[method].load()(spec, seed)


def quickstart(n: int):
    """The quickstart tagger (TorchScript export), its envelope and data, through a SpecRun."""
    folder = ROOT / "examples" / "quickstart"
    doc = tomllib.loads((folder / "tagger.robust.toml").read_text())
    doc["model"].update(path="tagger.pt", output=0)
    run = SpecRun(parse_spec(doc, folder / "tagger.robust.toml"), device="cpu")
    inputs, labels = run.inputs()
    inputs = {k: v[:n] for k, v in inputs.items()}
    module = torch.jit.load(str(folder / "tagger.pt"))
    return run.tagger, module, run.envelope, inputs, labels[:n], "jets"


def synthetic(kind: str, n: int):
    build = C.build_mlp if kind == "mlp" else C.build_deepsets
    model, inputs, labels, _ = build(n)
    for p in model.parameters():
        p.requires_grad_(False)
    tagger = wrap_module(model, "benchmarks/strong_attacks.py")
    perturbed = "x" if kind == "mlp" else "parts"
    return tagger, model, C.envelope_for(kind), inputs, labels, perturbed


class ImageShaped(nn.Module):
    """torchattacks' APGD takes 4-d image batches: u as (events, entries, 1, 1)."""

    def __init__(self, box: UnitBox) -> None:
        super().__init__()
        self.box = box

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.box(u.reshape(self.box.batch[self.box.perturbed].shape))


def torchattacks_apgd(
    ta,
    module: nn.Module,
    envelope: Envelope,
    inputs: Inputs,
    labels: torch.Tensor,
    perturbed: str,
    epsilon: float,
    steps: int,
    batch_size: int,
) -> tuple[Inputs, float]:
    """torchattacks' APGD-ce in the sigma box (see the module doc); adversarial inputs, time."""
    wrapper = UnitBox(module, perturbed, list(inputs))
    attack = ta.APGD(
        ImageShaped(wrapper), norm="Linf", eps=0.5, steps=steps, n_restarts=1, loss="ce", seed=0
    )
    box = envelope.box(inputs, epsilon)
    lower, upper, unit = box.lower[perturbed], box.upper[perturbed], box.unit[perturbed]
    adv = inputs[perturbed].clone()
    started = time.perf_counter()
    for start in range(0, len(labels), batch_size):
        part = slice(start, min(start + batch_size, len(labels)))
        batch = {k: v[part] for k, v in inputs.items()}
        wrapper.set_batch(batch, lower[part], upper[part], epsilon * unit[part])
        x0 = batch[perturbed]
        u = attack(torch.full((len(x0), x0[0].numel(), 1, 1), 0.5), labels[part])
        with torch.no_grad():
            adv[part] = wrapper.to_x(u.reshape(x0.shape))
    return {**inputs, perturbed: adv}, time.perf_counter() - started


def bench(name: str, setup, args, ta) -> list[str]:
    tagger, module, envelope, inputs, labels, perturbed = setup
    decision = Decision(1)
    log_probs = evaluate(tagger, inputs, 8192)
    correct = decision.decide(log_probs) == labels
    n = int(correct.sum())
    rows = []
    for epsilon in args.epsilon:
        fooled_by: dict[str, int] = {}
        seconds: dict[str, float] = {}
        notes = ""
        for label, (method, options) in ATTACKS.items():
            attack = make_attack(method, options, epsilon, seed=1)
            outcome = run_attack(
                attack, tagger, envelope, inputs, labels, decision, correct, args.batch_size
            )
            adv_log_probs = evaluate(tagger, {**inputs, **outcome.adversarial}, 8192)
            fooled = correct & (decision.decide(adv_log_probs) != labels)
            fooled_by[label], seconds[label] = int(fooled.sum()), outcome.seconds
            if method == "ensemble":
                notes = attack.report()[0][0]
        if ta is not None:
            for steps in (20, 50):
                picked = {k: v[correct] for k, v in inputs.items()}
                adv, secs = torchattacks_apgd(
                    ta,
                    module,
                    envelope,
                    picked,
                    labels[correct],
                    perturbed,
                    epsilon,
                    steps,
                    args.batch_size,
                )
                adv_log_probs = evaluate(tagger, adv, 8192)
                k = int((decision.decide(adv_log_probs) != labels[correct]).sum())
                (
                    fooled_by[f"torchattacks APGD-{steps} ce"],
                    seconds[f"torchattacks APGD-{steps} ce"],
                ) = k, secs
        rows.append(f"\n{name}, epsilon {epsilon:g} sigma, {n:,} correctly classified events")
        rows.append("| attack | fooled | fooling rate | seconds |")
        rows.append("|---|---|---|---|")
        for label in fooled_by:
            k = fooled_by[label]
            rows.append(f"| {label} | {k:,} | {k / n:.4f} | {seconds[label]:.2f} |")
        rows.append(notes)
        members = ("APGD-20 ce", "APGD-20", "SPSA-20")  # the ensemble's members, alone
        rows.append(
            f"targets: APGD-20 {fooled_by['APGD-20']:,} vs PGD-100 {fooled_by['PGD-100']:,} "
            f"fooled, in {seconds['APGD-20'] / seconds['PGD-100']:.2f} of its time; "
            f"APGD-50 {fooled_by['APGD-50']:,} in {seconds['APGD-50'] / seconds['PGD-100']:.2f}; "
            f"ensemble {fooled_by['ensemble']:,} vs its members alone "
            f"{', '.join(str(fooled_by[m]) for m in members)}, in "
            f"{seconds['ensemble']:.2f} s vs their sum {sum(seconds[m] for m in members):.2f} s"
        )
        print("\n".join(rows[-(len(fooled_by) + 5) :]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart", "mlp", "deepsets"])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--epsilon", type=float, nargs="+", default=[1.0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    C.set_threads(args.threads)
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks not installed: no cross-check (pip install torchattacks --no-deps)")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), load "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        + (f", torchattacks {ta.__version__}" if ta else "")
    )
    for kind in args.models:
        setup = quickstart(args.events) if kind == "quickstart" else synthetic(kind, args.events)
        bench(kind, setup, args, ta)
    print(f"load at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
