"""The cost of one min_epsilon run against PGD runs at N epsilons, and how well they agree.

On the correctly classified events of the benchmark MLP (or DeepSets) tagger, times:

* ``min_epsilon`` -- ``robustcheck.engine.run_attack`` with ``MinEpsilon`` (``--max-epsilon``,
  ``--steps`` per probe, ``--bisections``): every event's radius, so the whole fooling rate vs
  epsilon curve, to a resolution of max_epsilon / 2**bisections;
* ``pgd @ e``     -- ``run_attack`` with ``PGD`` (same steps, step 2.5 e / steps, random start,
  early stop) at each epsilon of an N-point grid up to max_epsilon (``--probe apgd``: min_epsilon
  with APGD probes against APGD runs, margin loss, same steps),

and prints, per grid epsilon, the fooling rate read from the curve (radius <= e) and the one of
the PGD run with their 95% Clopper-Pearson intervals, the events on which they disagree and
the exact McNemar p-value of that split; then the time of min_epsilon in units of one PGD run
and against PGD at N epsilons (the break-even N).

    python benchmarks/min_epsilon.py --threads 1
    python benchmarks/min_epsilon.py --threads 1 --model deepsets --events 4096
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from robustcheck import registry  # noqa: E402
from robustcheck.attacks import ATTACKS  # noqa: E402
from robustcheck.attacks.min_epsilon import RADIUS, MinEpsilon  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import evaluate, run_attack  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.stats import clopper_pearson  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--model", choices=("mlp", "deepsets"), default="mlp")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-epsilon", type=float, default=2.0)
    ap.add_argument("--bisections", type=int, default=ATTACKS["min_epsilon"].default("bisections"))
    ap.add_argument("--grid", type=int, default=6, help="PGD runs at max_epsilon * i / grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe", choices=("pgd", "apgd"), default="pgd")
    args = ap.parse_args(argv)

    threads = C.set_threads(args.threads)
    if args.model == "mlp":
        model, inputs, labels, acc = C.build_mlp(args.events)
        title = "MLP 24-128-128-128-2"
    else:
        model, inputs, labels, acc = C.build_deepsets(args.events)
        title = "DeepSets 64 x 4"
    C.freeze(model)
    envelope = C.envelope_for(args.model)
    tagger = wrap_module(model, "benchmarks/min_epsilon.py")
    decision = Decision(1)
    correct = decision.decide(evaluate(tagger, inputs, args.batch_size)) == labels
    n = int(correct.sum())

    def run(attack: object) -> tuple[float, float, object]:
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = run_attack(
            attack, tagger, envelope, inputs, labels, decision, correct, args.batch_size
        )
        return time.perf_counter() - wall, time.process_time() - cpu, outcome

    def fooled(adversarial: dict[str, torch.Tensor]) -> np.ndarray:
        log_probs = evaluate(tagger, {**inputs, **adversarial}, args.batch_size)
        return (decision.decide(log_probs) != labels).numpy()[correct.numpy()]

    before = C.cpu_pressure()
    options = {"steps": args.steps, "seed": args.seed}
    radius_options = {
        **options,
        "max_epsilon": args.max_epsilon,
        "bisections": args.bisections,
        "probe": args.probe,
    }
    values = registry.attack_options("min_epsilon", radius_options, "benchmark", "")
    min_eps = MinEpsilon(AttackSpec("radius", "min_epsilon", values), args.seed)
    run(min_eps)  # warm-up
    wall_min, cpu_min, outcome = run(min_eps)
    radii = outcome.per_event[RADIUS].numpy()[correct.numpy()]
    radii = np.where(fooled(outcome.adversarial), radii, np.inf)

    grid = [args.max_epsilon * (i + 1) / args.grid for i in range(args.grid)]
    rows = []
    for epsilon in grid:
        values = registry.attack_options(args.probe, {**options, "epsilon": epsilon}, "b", "")
        single = registry.attacks()[args.probe].load()(
            AttackSpec(args.probe, args.probe, values), args.seed
        )
        wall, cpu, result = run(single)
        by_pgd = fooled(result.adversarial)
        by_curve = radii <= epsilon
        b, c = int((by_curve & ~by_pgd).sum()), int((by_pgd & ~by_curve).sum())
        p = binomtest(b, b + c).pvalue if b + c else 1.0
        rows.append((epsilon, int(by_curve.sum()), int(by_pgd.sum()), b, c, p, wall, cpu))

    print(f"machine: {C.machine()}; torch threads {threads}")
    print(f"load: before {before}; after {C.cpu_pressure()}")
    print(
        f"{title}, {args.events:,} events ({n:,} correctly classified, accuracy {acc:.3f}), "
        f"batch {args.batch_size}, {args.steps} PGD steps, seed {args.seed}"
    )
    print(f"min_epsilon: {min_eps.describe()}")
    finite = radii[np.isfinite(radii)]
    print(
        f"  {wall_min:.2f} s wall, {cpu_min:.2f} s CPU; {len(finite):,} events fooled up to "
        f"{args.max_epsilon:g} sigma, median radius {np.median(finite):.3g} sigma"
    )
    print(
        f"{'eps':>6s} {'curve rate (95% CL)':>28s} {'probe rate (95% CL)':>28s} "
        f"{'only curve':>10s} {'only probe':>10s} {'McNemar p':>9s} {'run s':>7s} {'CPU s':>6s}"
    )
    for epsilon, k_curve, k_pgd, b, c, p, wall, cpu in rows:
        texts = []
        for k in (k_curve, k_pgd):
            low, high = clopper_pearson(k, n)
            texts.append(f"{k / n:.4f} ({low:.4f}-{high:.4f})")
        print(
            f"{epsilon:6.3g} {texts[0]:>28s} {texts[1]:>28s} {b:10d} {c:10d} {p:9.3g} "
            f"{wall:7.2f} {cpu:6.2f}"
        )
    print(f"probe: {args.probe} at each epsilon (the same steps and seed) against the curve")
    for kind, column, own in (("wall", 6, wall_min), ("CPU", 7, cpu_min)):
        pgd_max = rows[-1][column]
        total = sum(r[column] for r in rows)
        mean = total / len(rows)
        print(
            f"{kind}: min_epsilon = {own / pgd_max:.2f} x the probe attack at max_epsilon "
            f"({pgd_max:.2f} s), "
            f"{own / mean:.2f} x the mean run of the grid; all {len(rows)} "
            f"epsilons: {total:.2f} s ({total / own:.2f} x min_epsilon)"
        )
    print(
        f"the curve's resolution {min_eps.resolution:.3g} sigma would take "
        f"{2**args.bisections} runs at fixed epsilons"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
