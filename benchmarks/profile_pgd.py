"""Where robustcheck's PGD spends the time above the bare forward + input-gradient loop.

Profiles ``robustcheck.engine.run_attack`` (PGD) and the bare limit of attack_speed.py on the
same MLP and events with torch.profiler (per-op self CPU time, grouped into the forward /
backward of the model, the decision and loss, the step and projection, and set-up) and, with
``--cprofile``, Python's cProfile (cumulative time per robustcheck function).

    python benchmarks/profile_pgd.py --threads 2 [--model deepsets] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from robustcheck.attacks.pgd import PGD  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import run_attack  # noqa: E402
from robustcheck.event_random import EventRandom  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


def setup(kind: str, events: int, batch_size: int, steps: int, epsilon: float):
    if kind == "mlp":
        model, inputs, labels, _ = C.build_mlp(events)
        perturbed = "x"
    else:
        model, inputs, labels, _ = C.build_deepsets(events)
        perturbed = "parts"
    C.freeze(model)
    envelope = C.envelope_for(kind)
    spec = AttackSpec(
        "pgd", "pgd", {"epsilon": epsilon, "steps": steps, "seed": 0, "batch_size": batch_size}
    )
    attack = PGD(spec, seed=0)
    tagger = wrap_module(model, "benchmarks/profile_pgd.py")
    select = torch.ones(len(labels), dtype=torch.bool)

    def engine():
        run_attack(attack, tagger, envelope, inputs, labels, Decision(1), select, batch_size)

    def limit():
        C.bare_limit(model, inputs, perturbed, labels, steps, batch_size)

    return engine, limit


def components(
    kind: str, events: int, batch_size: int, epsilon: float, step_size: float, min_run_time: float
) -> None:
    """Median time of each piece of one PGD step and of one batch's set-up.

    Measured with torch.utils.benchmark on one batch of real robustcheck objects.
    """
    from torch.utils.benchmark import Timer

    from robustcheck.attacks.base import AttackBatch
    from robustcheck.engine import take

    if kind == "mlp":
        model, inputs, labels, _ = C.build_mlp(min(events, batch_size))
    else:
        model, inputs, labels, _ = C.build_deepsets(min(events, batch_size))
    C.freeze(model)
    envelope = C.envelope_for(kind)
    tagger = wrap_module(model, "benchmarks/profile_pgd.py")
    decision = Decision(1)
    rows = torch.arange(len(labels))
    nominal = take(inputs, rows, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    batch = AttackBatch(
        tagger=tagger,
        nominal=nominal,
        target=decision.target(labels),
        box=envelope.box(nominal, epsilon),
        decision=decision,
        random=EventRandom.of(0, "pgd", rows),
    )
    adv = batch.start()
    perturbed = next(iter(adv))
    x = adv[perturbed]
    names = list(inputs)
    grads, fooled = batch.loss_and_grad(adv)
    g = grads[0]
    log_probs = tagger.log_probs({**nominal, **adv}).detach()
    unit = batch.box.unit[perturbed]

    def bare_step():
        leaf = x.detach().requires_grad_(True)
        args = [leaf if k == perturbed else nominal[k] for k in names]
        loss = torch.nn.functional.cross_entropy(model(*args), labels, reduction="sum")
        torch.autograd.grad(loss, leaf)

    def signed_step():
        batch.signed_step_({perturbed: x.detach()}, [g.clone()], step_size, fooled)

    def clone_grad():
        g.clone()

    def fused_step():  # proposal A
        xd, gc = x.detach(), g.clone()
        gc.sign_()
        gc.masked_fill_(fooled.view(-1, *([1] * (gc.dim() - 1))), 0.0)
        xd.addcmul_(gc, unit, value=step_size)
        batch.box.project_({perturbed: xd})

    with tagger.frozen():
        pieces = {
            "step: bare forward + input grad": bare_step,
            "step: loss_and_grad (engine)": lambda: batch.loss_and_grad(adv),
            "step:   decision argmax != target": lambda: decision.decide(log_probs) != batch.target,
            "step: signed_step_ incl. project_ (engine)": signed_step,
            "step:   (clone of the gradient, test harness)": clone_grad,
            "step:   project_ (clamp)": lambda: batch.box.project_({perturbed: x.detach()}),
            "step: fused step (proposal A)": fused_step,
            "batch: take (index gather)": lambda: take(inputs, rows, torch.device("cpu")),
            "batch: Envelope.box": lambda: envelope.box(nominal, epsilon),
            "batch: start + random start": lambda: (
                batch.start()[perturbed]
                .detach()
                .add_(torch.rand(x.shape, generator=gen).mul_(2).sub_(1).mul_(epsilon).mul_(unit))
            ),
            "batch: write-back (index_put)": lambda: (
                inputs[perturbed].clone().index_put_((rows,), x.detach())
            ),
        }
        print(
            f"\n== {kind}: one batch of {len(labels)} events, {torch.get_num_threads()} threads "
            f"(torch.utils.benchmark, median) =="
        )
        for name, fn in pieces.items():
            timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            m = timer.blocked_autorange(min_run_time=min_run_time)
            print(f"  {name:48s} {m.median * 1e3:9.3f} ms   (IQR {m.iqr * 1e3:.3f})")


def op_table(fn, label: str, rows: int) -> dict[str, float]:
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    print(f"\n== {label}: top {rows} ops by self CPU time ==")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=44))
    return {e.key: e.self_cpu_time_total / 1e3 for e in events}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "deepsets"), default="mlp")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument(
        "--components",
        action="store_true",
        help="only time the pieces of one step and one batch's set-up",
    )
    ap.add_argument("--min-run-time", type=float, default=0.5)
    args = ap.parse_args(argv)

    print(f"torch.set_num_threads({args.threads}) -> {C.set_threads(args.threads)} threads")
    if args.components:
        components(
            args.model,
            args.events,
            args.batch_size,
            args.epsilon,
            2.5 * args.epsilon / args.steps,
            args.min_run_time,
        )
        return 0
    engine, limit = setup(args.model, args.events, args.batch_size, args.steps, args.epsilon)
    ours = op_table(engine, "robustcheck run_attack", args.rows)
    bare = op_table(limit, "bare limit", args.rows)

    print("\n== self CPU ms per op: robustcheck minus limit (largest first) ==")
    diff = defaultdict(float)
    for key in set(ours) | set(bare):
        diff[key] = ours.get(key, 0.0) - bare.get(key, 0.0)
    for key, ms in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.rows]:
        print(
            f"  {key:48s} {ms:+9.2f}  "
            f"(ours {ours.get(key, 0.0):8.2f}, limit {bare.get(key, 0.0):8.2f})"
        )
    print(
        f"  {'TOTAL':48s} {sum(ours.values()) - sum(bare.values()):+9.2f}  "
        f"(ours {sum(ours.values()):8.2f}, limit {sum(bare.values()):8.2f})"
    )

    if args.cprofile:
        engine()
        pr = cProfile.Profile()
        pr.enable()
        engine()
        pr.disable()
        print("\n== cProfile of run_attack (cumulative) ==")
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
