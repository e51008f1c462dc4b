"""robustcheck's PGD against torchattacks, ART and the bare limit, on an MLP and a DeepSets tagger.

Every attacker runs PGD with 20 steps of 2.5 * epsilon / 20 sigma and a random start inside the
same box: each entry within ``epsilon`` of its per-entry sigma (absolute and relative parts in
quadrature, zero for frozen, integer, placeholder and padded entries), intersected with the
feature's physical bounds. How each peer is made to attack that box:

* torchattacks ``PGD`` works in [0, 1] with one scalar ``eps``. Each batch is rescaled into it:
  the attacked variable is u in [0, 1]^d with x = clamp(x0 + (2u - 1) * eps * sigma, lower, upper),
  u0 = 0.5, ``eps = 0.5`` and ``alpha = step / (2 eps)``, so torchattacks' own projection
  (|u - u0| <= 0.5, then [0, 1]) is exactly the epsilon-sigma ball and a step of alpha in u is a
  step of ``step`` sigma in x. The physical bounds are enforced inside the wrapper by a
  straight-through clamp (forward clamps, gradient passes), so gradients are never cut off.
  The wrapper's few elementwise ops per forward are counted in torchattacks' time.
* ART ``ProjectedGradientDescentPyTorch`` takes ``eps`` and ``eps_step`` as per-event,
  per-entry arrays (epsilon * sigma and step * sigma), ``clip_values`` as the per-feature
  physical bounds, and the entries that may move as its ``mask``. ART wants one input array,
  so the DeepSets input is flattened to parts (64 x 4) + mask (64) per event, the mask never
  moving; ``eps_step`` must be positive, so entries that never move get a 1e-12 step (masked).

Parameters never require gradients (frozen for every attacker alike). Throughput attacks every
event with the full budget; robustcheck runs ``robustcheck.engine.run_attack`` as is (its
early freeze still computes every gradient, so it does the same work). Time-to-answer is what
a user waits for a fooling rate: robustcheck's ``SpecRun.adversaries`` (nominal evaluation,
PGD on the correctly classified events only with its early freeze, adversarial evaluation),
against each peer's full-budget PGD on every event plus the two evaluations.

    python benchmarks/compare_peers.py --threads 2
    python benchmarks/compare_peers.py --models deepsets --events 5000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from robustcheck.attacks.pgd import PGD  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import run_attack  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


# ------------------------------------------------------------------------------------ peers
def load_peers() -> tuple[dict[str, object], dict[str, str]]:
    found, skipped = {}, {}
    try:
        import torchattacks

        found["torchattacks"] = torchattacks
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip"
        skipped["torchattacks"] = f"{type(exc).__name__}: {exc}"
    try:
        import art
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        found["ART"] = (art, ProjectedGradientDescentPyTorch, PyTorchClassifier)
    except Exception as exc:  # noqa: BLE001
        skipped["ART"] = f"{type(exc).__name__}: {exc}"
    return found, skipped


class UnitBox(nn.Module):
    """The tagger seen from u in [0, 1]^d: x = clamp(x0 + (2u - 1) * radius, lower, upper)."""

    def __init__(self, model: nn.Module, perturbed: str, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.perturbed = perturbed
        self.names = names
        self.batch: dict[str, torch.Tensor] = {}

    def set_batch(self, batch: dict[str, torch.Tensor], lower, upper, radius) -> None:
        self.batch, self.lower, self.upper, self.radius = batch, lower, upper, radius

    def to_x(self, u: torch.Tensor) -> torch.Tensor:
        raw = self.batch[self.perturbed] + (2 * u - 1) * self.radius
        return torch.clamp(raw, self.lower, self.upper)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        raw = self.batch[self.perturbed] + (2 * u - 1) * self.radius
        x = raw + (torch.clamp(raw, self.lower, self.upper) - raw).detach()  # straight through
        return self.model(*(x if k == self.perturbed else self.batch[k] for k in self.names))


class Flat(nn.Module):
    """The DeepSets tagger on one flat array per event: 64 x 4 constituents, then the mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        n = flat.shape[0]
        parts = flat[:, : C.N_PARTS * 4].reshape(n, C.N_PARTS, 4)
        return self.model(parts, flat[:, C.N_PARTS * 4 :])


# ---------------------------------------------------------------------------------- attackers
def make_attackers(kind, model, inputs, labels, envelope, args, peers, step_size):
    """name -> fn(n) running full-budget PGD on the first n events, returning adversarial x."""
    perturbed = C.PERTURBED_INPUT[kind]
    names = list(inputs)
    bs, eps, steps = args.batch_size, args.epsilon, args.steps
    box = envelope.box(inputs, eps)  # the full sample's box, for the peers
    lower, upper, unit = box.lower[perturbed], box.upper[perturbed], box.unit[perturbed]

    spec = AttackSpec("pgd", "pgd", {"epsilon": eps, "steps": steps, "seed": 0, "batch_size": bs})
    attack = PGD(spec, seed=0)
    tagger = wrap_module(model, "benchmarks/compare_peers.py")
    decision = Decision(1)

    def robustcheck(n):
        select = torch.zeros(len(labels), dtype=torch.bool)
        select[:n] = True
        return run_attack(
            attack, tagger, envelope, inputs, labels, decision, select, bs
        ).adversarial[perturbed][:n]

    def limit(n):
        C.bare_limit(model, {k: v[:n] for k, v in inputs.items()}, perturbed, labels[:n], steps, bs)

    out: dict[str, Callable[[int], object]] = {"robustcheck": robustcheck}

    if "torchattacks" in peers:
        ta = peers["torchattacks"]
        wrapper = UnitBox(model, perturbed, names)
        pgd = ta.PGD(wrapper, eps=0.5, alpha=step_size / (2 * eps), steps=steps, random_start=True)

        def torchattacks_pgd(n):
            torch.manual_seed(0)
            adv = torch.empty_like(inputs[perturbed][:n])
            for start in range(0, n, bs):
                part = slice(start, min(start + bs, n))
                batch = {k: v[part] for k, v in inputs.items()}
                wrapper.set_batch(batch, lower[part], upper[part], eps * unit[part])
                u = pgd(torch.full_like(batch[perturbed], 0.5), labels[part])
                with torch.no_grad():
                    adv[part] = wrapper.to_x(u)
            return adv

        out["torchattacks"] = torchattacks_pgd

    if "ART" in peers:
        _, ArtPGD, PyTorchClassifier = peers["ART"]
        if kind == "mlp":
            flat_x = inputs["x"].numpy()
            flat_unit = unit.numpy()
            clip = (envelope.inputs["x"].lower.numpy(), envelope.inputs["x"].upper.numpy())
            net: nn.Module = model
            shape = (C.N_FLAT,)
        else:
            n_all = len(labels)
            flat_x = torch.cat([inputs["parts"].reshape(n_all, -1), inputs["mask"]], 1).numpy()
            flat_unit = torch.cat(
                [unit.reshape(n_all, -1), torch.zeros_like(inputs["mask"])], 1
            ).numpy()
            env = envelope.inputs["parts"]
            inf = np.full(C.N_PARTS, np.inf, dtype=np.float32)
            clip = (
                np.concatenate([np.tile(env.lower.numpy(), C.N_PARTS), -inf]),
                np.concatenate([np.tile(env.upper.numpy(), C.N_PARTS), inf]),
            )
            net = Flat(model)
            shape = (flat_x.shape[1],)
        classifier = PyTorchClassifier(
            model=net,
            loss=nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=2,
            clip_values=clip,
            device_type="gpu" if args.device == "cuda" else "cpu",
        )
        y_np = labels.numpy()
        art_eps = (eps * flat_unit).astype(np.float32)
        art_step = np.where(flat_unit > 0, step_size * flat_unit, 1e-12).astype(np.float32)
        art_mask = (flat_unit > 0).astype(np.float32)

        def art_pgd(n):
            np.random.seed(0)
            atk = ArtPGD(
                classifier,
                norm=np.inf,
                eps=art_eps[:n],
                eps_step=art_step[:n],
                max_iter=steps,
                targeted=False,
                num_random_init=1,
                batch_size=bs,
                verbose=False,
            )
            adv = atk.generate(flat_x[:n], y_np[:n], mask=art_mask[:n])
            adv = torch.from_numpy(adv)
            if kind == "deepsets":
                return adv[:, : C.N_PARTS * 4].reshape(n, C.N_PARTS, 4)
            return adv

        out["ART"] = art_pgd

    out["limit"] = limit
    return out, attack


def predict(model, inputs, bs=8192) -> torch.Tensor:
    n = len(next(iter(inputs.values())))
    with torch.no_grad():
        return torch.cat(
            [model(*(v[s : s + bs] for v in inputs.values())).argmax(1) for s in range(0, n, bs)]
        )


# ----------------------------------------------------------------------------- time to answer
def write_spec(folder: Path, kind: str, model, inputs, labels, args) -> Path:
    """A robustness.toml with the tagger as an import path, its weights and the data."""
    shutil.copy(Path(C.__file__), folder / "bench_models.py")
    torch.save(model.state_dict(), folder / f"{kind}.pt")
    np.savez(folder / f"{kind}.npz", y=labels.numpy(), **{k: v.numpy() for k, v in inputs.items()})
    doc = C.spec_doc(
        kind,
        args.device,
        f"{kind}.npz",
        {k: k for k in inputs},
        epsilon=args.epsilon,
        steps=args.steps,
        batch_size=args.batch_size,
    )
    return C.write_spec(folder / "robustness.toml", doc)


def robustcheck_answer(spec_path: Path, device: str) -> tuple[float, float]:
    """Seconds of ``SpecRun.adversaries`` (model and data already loaded), and its fooling rate."""
    from robustcheck.core import SpecRun

    run = SpecRun.from_path(spec_path, device=device)
    _ = run.tagger, run.inputs("nominal")  # loading model and data is not timed
    t0 = time.perf_counter()
    outcome = run.adversaries("pgd")
    seconds = time.perf_counter() - t0
    return seconds, float(outcome.fooled.sum()) / max(int(outcome.correct.sum()), 1)


# ------------------------------------------------------------------------------------- main
def bench(kind: str, args, peers) -> None:
    if kind == "mlp":
        model, inputs, labels, acc = C.build_mlp(args.events)
        title = "MLP 24-128-128-128-2"
    else:
        model, inputs, labels, acc = C.build_deepsets(args.events)
        title = "DeepSets 64 x 4 (phi 4-32-32, sum, rho 32-32-2)"
    C.freeze(model)
    n = len(labels)
    envelope = C.envelope_for(kind)
    step_size = 2.5 * args.epsilon / args.steps
    attackers, attack = make_attackers(
        kind, model, inputs, labels, envelope, args, peers, step_size
    )

    warm = min(n, args.batch_size)
    for fn in attackers.values():  # warm-up on one batch
        fn(warm)

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = write_spec(Path(tmp), kind, model, inputs, labels, args)
        pressure_before = C.cpu_pressure()
        times: dict[str, list[float]] = {name: [] for name in attackers}
        cpu: dict[str, list[float]] = {name: [] for name in attackers}
        adversarial: dict[str, torch.Tensor] = {}
        answer_times, eval_times, rc_rate = [], [], 0.0
        robustcheck_answer(spec_path, args.device)  # warm-up (imports the model module)
        for _ in range(args.repeats):  # every attacker and the answers see the same load
            for name, fn in attackers.items():
                c0, t0 = time.process_time(), time.perf_counter()
                result = fn(n)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                if result is not None:
                    adversarial[name] = result
            seconds, rc_rate = robustcheck_answer(spec_path, args.device)
            answer_times.append(seconds)
            t0 = time.perf_counter()
            predict(model, inputs)
            eval_times.append(time.perf_counter() - t0)

    # fooling rates reached by the full-budget runs, over the correctly classified events
    correct = predict(model, inputs) == labels
    rates = {}
    for name, adv in adversarial.items():
        pred = predict(model, {**inputs, C.PERTURBED_INPUT[kind]: adv})
        rates[name] = float((correct & (pred != labels)).sum()) / max(int(correct.sum()), 1)

    base = statistics.median(times["limit"])
    base_min = min(times["limit"])
    print(
        f"\n## {title}: {n:,} events, batch {args.batch_size}, PGD {args.steps} steps of "
        f"{step_size:.3g} sigma, eps {args.epsilon:g} sigma, random start; nominal accuracy "
        f"{acc:.3f} ({int(correct.sum()):,} correct)"
    )
    print(f"load: before {pressure_before}; after {C.cpu_pressure()}")
    print(
        f"throughput, full budget on every event, median of {args.repeats} interleaved runs "
        "(after a one-batch warm-up; min: least-disturbed run):"
    )
    print(
        f"  {'attacker':14s} {'median s':>9s} {'events/s':>10s} {'x limit':>8s} {'min s':>7s} "
        f"{'x limit':>8s} {'fooling rate':>13s}   all runs (s)"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        rate = f"{rates[name]:.3f}" if name in rates else "-"
        runs = " ".join(f"{t:.2f}" for t in ts)
        print(
            f"  {name:14s} {med:9.3f} {n / med:10,.0f} {med / base:8.3f} {min(ts):7.3f} "
            f"{min(ts) / base_min:8.3f} {rate:>13s}   {runs}"
        )
    cpu_base = statistics.median(cpu["limit"])
    print(
        "  process CPU time, median (robust to other load with --threads 1): "
        + ", ".join(
            f"{name} {statistics.median(ts):.3f} s (x{statistics.median(ts) / cpu_base:.3f})"
            for name, ts in cpu.items()
        )
    )
    print("time to answer (a fooling rate over the correctly classified events), median / min:")
    print(
        f"  {'robustcheck':14s} {statistics.median(answer_times):7.3f} / {min(answer_times):.3f} s"
        f"  fooling rate {rc_rate:.3f}  (SpecRun.adversaries: nominal evaluation, PGD on the "
        "correct events only with early stop, adversarial evaluation)"
    )
    for name in attackers:
        if name in ("robustcheck", "limit"):
            continue
        per_run = [t + 2 * e for t, e in zip(times[name], eval_times, strict=True)]
        print(
            f"  {name:14s} {statistics.median(per_run):7.3f} / {min(per_run):.3f} s"
            f"  fooling rate {rates[name]:.3f}  (full budget on all {n:,} events + 2 evaluations)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="mlp,deepsets", help="comma list of mlp, deepsets")
    args = ap.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit(
            "compare_peers.py runs on the CPU only (the peers' device handling differs)"
        )

    threads = C.set_threads(args.threads)
    peers, skipped = load_peers()
    print(f"machine: {C.machine()}")
    print(f"device: cpu, torch.set_num_threads({args.threads}) -> {threads} threads")
    versions = []
    if "torchattacks" in peers:
        versions.append(f"torchattacks {peers['torchattacks'].__version__}")
    if "ART" in peers:
        versions.append(f"adversarial-robustness-toolbox {peers['ART'][0].__version__}")
    print("peers: " + (", ".join(versions) or "none"))
    for name, why in skipped.items():
        print(
            f"SKIPPED {name}: not importable ({why}); "
            "pip install torchattacks adversarial-robustness-toolbox"
        )
    for kind in args.models.split(","):
        bench(kind.strip(), args, peers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
