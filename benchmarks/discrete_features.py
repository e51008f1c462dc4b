"""Integer features that move by whole units: what they add to an attack's fooling rate and time.

The MLP of ``_common`` takes a multiplicity (feature 21, Poisson counts that differ by class).
PGD-20 and FGSM attack it with that feature frozen (``integer = true`` without sigma, the
default) and moving by whole units (``integer = true, absolute = 1.0``, so +-floor(epsilon)
units), at several epsilons. The time of PGD-20 with and without the integer feature is also
measured on the DeepSets tagger, whose (64, 4) particle input makes the per-step rounding of
one integer column as costly as it can be (stochastic rounding draws one number per entry).

Run: ``PYTHONPATH=. python3 benchmarks/discrete_features.py [--events 8192] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

from _common import (  # noqa: E402
    build_deepsets,
    build_mlp,
    feature_envelopes,
    flat_envelope_table,
    median_time,
    parts_envelope_table,
    set_threads,
)

from robustcheck import registry  # noqa: E402
from robustcheck.attacks.base import AttackBatch  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.envelope import Envelope, InputEnvelope  # noqa: E402
from robustcheck.event_random import EventRandom  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


def entries(table: dict[str, dict], name: str, integer: dict | None) -> dict:
    """The feature entries with ``name`` replaced by ``integer`` (when given)."""
    table = dict(table)
    if integer is not None:
        table[name] = integer
    return feature_envelopes(table)


def attack(method: str, epsilon: float, model, envelope: Envelope, inputs, labels, steps: int):
    """(fooled events, correct events) of one attack on the whole sample, as one batch."""
    options = {"epsilon": epsilon, "seed": 1}
    if method == "pgd":
        options["steps"] = steps
    values = registry.attack_options(method, options, "attacks.bench", "bench")
    runner = registry.attacks()[method].load()(AttackSpec("bench", method, values), 1)
    tagger = wrap_module(model, "bench", input_names=list(inputs))
    tagger.bind(list(inputs))
    decision = Decision(1)
    with torch.no_grad():
        correct = model(*inputs.values()).argmax(1) == labels
    nominal = {k: v[correct] for k, v in inputs.items()}
    target = labels[correct]
    with tagger.frozen():
        batch = AttackBatch(
            tagger,
            nominal,
            decision.target(target),
            envelope.box(nominal, epsilon),
            decision,
            EventRandom.of(runner.seed, runner.stream_label, torch.arange(len(target))),
        )
        adv = runner.perturb(batch)
        with torch.no_grad():
            fooled = model(*{**nominal, **adv}.values()).argmax(1) != target
    return int(fooled.sum()), int(correct.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_threads(1)
    device = torch.device("cpu")
    print(f"load: {os.getloadavg()[0]:.2f}, 1 torch thread, {args.events} events")

    model, inputs, labels, acc = build_mlp(args.events)
    print(f"MLP accuracy {acc:.3f}; feature f21 = multiplicity")
    table = flat_envelope_table()
    envelopes = {
        "frozen": {"integer": True},
        "integer": {"integer": True, "absolute": 1.0},
    }
    print(f"{'attack':<8}{'eps':>5}  " + "  ".join(f"{k:>16}" for k in envelopes))
    for method in ("fgsm", "pgd"):
        for epsilon in (1.0, 2.0, 3.0):
            cells = []
            for entry in envelopes.values():
                env = Envelope(
                    {"x": InputEnvelope.from_features("x", entries(table, "f21", entry))}
                )
                fooled, correct = attack(method, epsilon, model, env, inputs, labels, 20)
                cells.append(f"{fooled:>6}/{correct} {fooled / correct:5.1%}")
            print(f"{method:<8}{epsilon:>5g}  " + "  ".join(f"{c:>16}" for c in cells))

    for kind in ("mlp", "deepsets"):
        if kind == "mlp":
            name, feature, table, mask = "x", "f21", flat_envelope_table(), None
        else:
            model, inputs, labels, acc = build_deepsets(args.events)
            name, feature, table, mask = "parts", "energy", parts_envelope_table(), "mask"
        times = {}
        for label, entry in (
            ("continuous/frozen", None),
            ("integer", {"integer": True, "absolute": 5.0 if kind == "deepsets" else 1.0}),
        ):
            env = Envelope(
                {name: InputEnvelope.from_features(name, entries(table, feature, entry), mask)}
            )
            seconds, _ = median_time(
                lambda env=env, m=model, x=inputs, y=labels: attack("pgd", 1.0, m, env, x, y, 20),
                args.repeats,
                device,
            )
            times[label] = seconds
        base, moved = times["continuous/frozen"], times["integer"]
        print(
            f"{kind}: PGD-20 {base:.3f} s with {feature} "
            f"{'frozen' if kind == 'mlp' else 'continuous'}, {moved:.3f} s with {feature} "
            f"integer ({moved / base - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
