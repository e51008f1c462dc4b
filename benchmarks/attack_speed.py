"""How close robustcheck's batched PGD comes to the cost of the gradients it needs.

Times, in one process and round-robin so that load drift hits all alike:

* ``robustcheck``  -- ``robustcheck.engine.run_attack`` with ``robustcheck.attacks.pgd.PGD``
  (20 steps, epsilon 1 sigma, random start) on every event, exactly as the engine runs it
  (early stop on: an event stops moving once its decision flips).
* ``rc no early stop`` -- the same with ``run_attack(..., early_stop=False)`` (where the engine
  has that switch): every event takes every step, the "same work" as the limit.
* ``minimal PGD``  -- a hand-written PGD on the same box (random start, signed steps, clamp),
  the price of PGD itself without robustcheck's machinery.
* ``limit``        -- a bare loop of the same number of forward + input-gradient passes
  (``torch.autograd.grad`` w.r.t. the input only, same batches, parameters frozen).

and prints events/s (median of ``--repeats``) and the ratios to the limit.

    python benchmarks/attack_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from robustcheck.attacks.pgd import PGD  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import run_attack  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--model",
        choices=("mlp", "deepsets"),
        default="mlp",
        help="the 24-feature MLP (default) or the 64 x 4 DeepSets tagger",
    )
    args = ap.parse_args(argv)

    threads = C.set_threads(args.threads)
    device = C.resolve(args.device)
    if args.model == "mlp":
        model, inputs, labels, acc = C.build_mlp(args.events)
        perturbed, title = "x", "MLP 24-128-128-128-2"
    else:
        model, inputs, labels, acc = C.build_deepsets(args.events)
        perturbed, title = "parts", "DeepSets 64 x 4 (phi 4-32-32, sum, rho 32-32-2)"
    C.freeze(model)
    model = model.to(device)
    envelope = C.envelope_for(args.model)

    spec = AttackSpec(
        "pgd",
        "pgd",
        {"epsilon": args.epsilon, "steps": args.steps, "seed": 0, "batch_size": args.batch_size},
    )
    attack = PGD(spec, seed=0)
    tagger = wrap_module(model, "benchmarks/attack_speed.py").to(device)
    decision = Decision(1)
    select = torch.ones(len(labels), dtype=torch.bool)

    def robustcheck():
        return run_attack(
            attack, tagger, envelope, inputs, labels, decision, select, args.batch_size
        )

    fns = {"robustcheck": robustcheck}
    if "early_stop" in inspect.signature(run_attack).parameters:

        def same_work():
            return run_attack(
                attack,
                tagger,
                envelope,
                inputs,
                labels,
                decision,
                select,
                args.batch_size,
                early_stop=False,
            )

        fns["rc no early stop"] = same_work

    dev_inputs = {k: v.to(device) for k, v in inputs.items()}
    dev_labels = labels.to(device)
    env_dev = envelope.to(device)

    def minimal():
        return C.minimal_pgd(
            model,
            dev_inputs,
            perturbed,
            dev_labels,
            env_dev.box,
            args.steps,
            attack.step_size,
            args.epsilon,
            args.batch_size,
        )

    def limit():
        C.bare_limit(model, dev_inputs, perturbed, dev_labels, args.steps, args.batch_size)

    pressure_before = C.cpu_pressure()
    cpu: dict[str, list[float]] = {}
    times = C.interleaved(
        {**fns, "minimal PGD": minimal, "limit": limit},
        args.repeats,
        device,
        cpu=cpu,
    )

    # what the attack did (one more run, not timed)
    outcome = robustcheck()
    with torch.no_grad():
        nominal = model(*dev_inputs.values()).argmax(1).cpu()
        adv_inputs = {**dev_inputs, perturbed: outcome.adversarial[perturbed].to(device)}
        adv = model(*adv_inputs.values()).argmax(1).cpu()
    correct = nominal == labels
    fooled = correct & (adv != labels)

    print(f"machine: {C.machine()}")
    print(f"device: {device}, torch.set_num_threads({args.threads}) -> {threads} threads")
    print(
        f"{title}, {args.events:,} events, batch {args.batch_size}, PGD "
        f"{args.steps} steps, eps {args.epsilon:g} sigma, step {attack.step_size:.3g} sigma; "
        f"nominal accuracy {acc:.3f}, fooling rate (engine, early freeze) "
        f"{int(fooled.sum()) / max(int(correct.sum()), 1):.3f}"
    )
    print(f"load: before {pressure_before}; after {C.cpu_pressure()}")
    print(
        f"median of {args.repeats} runs, interleaved, after one warm-up each "
        "(min: the least-disturbed run):"
    )
    base = statistics.median(times["limit"])
    base_min = min(times["limit"])
    print(
        f"  {'':16s} {'median s':>9s} {'events/s':>10s} {'ratio':>6s} {'min s':>7s} "
        f"{'ratio':>6s}   all runs (s)"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        runs = " ".join(f"{t:.3f}" for t in ts)
        print(
            f"  {name:16s} {med:9.3f} {args.events / med:10,.0f} {med / base:6.3f} "
            f"{min(ts):7.3f} {min(ts) / base_min:6.3f}   {runs}"
        )
    cpu_base = statistics.median(cpu["limit"])
    print(
        "process CPU time, median (robust to other load with --threads 1; inflated by spinning "
        "threads with more):"
    )
    for name, ts in cpu.items():
        med = statistics.median(ts)
        print(
            f"  {name:16s} {med:9.3f} s  ratio {med / cpu_base:6.3f}   runs "
            + " ".join(f"{t:.3f}" for t in ts)
        )
    ratio = statistics.median(times["robustcheck"]) / base
    print(
        f"robustcheck / limit = {ratio:.3f} on medians, {min(times['robustcheck']) / base_min:.3f} "
        "on minima (target <= 1.15)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
