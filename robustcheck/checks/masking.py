"""AutoAttack's sanity probes of a gradient attack (Croce & Hein 2020): are the input
gradients zero for many events, and do two evaluations of the same events differ?

Either makes a white-box attack's fooling rate unreliable: zero gradients give signed steps
of zero (the attack stands still), and randomised scores give gradients of noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.engine import take
from robustcheck.event_random import EventRandom

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.decision import Decision

PROBE_EVENTS = 1000  # events whose gradients are probed (the first correctly classified)
ZERO_GRADIENT_SHARE = 0.01  # warn when more than this share of events has zero gradient
RANDOMISED_EVENTS = 256
RANDOMISED_TOLERANCE = 1e-5  # largest |difference| of probabilities between two evaluations


def zero_gradient_events(
    run: SpecRun, attack: Attack, decision: Decision, correct: torch.Tensor
) -> tuple[int, int]:
    """Of up to PROBE_EVENTS correctly classified events that may move at all, how many have
    an input gradient of exactly zero in every entry the attack may move; and how many were
    probed. The gradient is the attack's own loss's (``Attack.event_loss``) at nominal."""
    inputs, labels = run.inputs("nominal")  # for a streamed sample: its kept events
    kept = run.kept("nominal")
    if kept is not None:
        correct = correct[torch.from_numpy(kept)]
    rows = torch.nonzero(correct).flatten()[:PROBE_EVENTS]
    if not len(rows):
        return 0, 0
    tagger = run.tagger
    nominal = take(inputs, rows, tagger.device)
    envelope = run.envelope.to(tagger.device)
    batch = AttackBatch(
        tagger=tagger,
        nominal=nominal,
        target=decision.target(labels[rows].to(tagger.device)),
        box=envelope.box(nominal, attack.epsilon),
        decision=decision,
        random=EventRandom.of(attack.seed, attack.stream_label, rows.to(tagger.device)),
    )
    with tagger.frozen():
        leaves = batch.start()
        log_probs = tagger.log_probs({**nominal, **leaves})
        loss = attack.event_loss(batch, log_probs)
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
    movable = torch.zeros(len(rows), dtype=torch.bool, device=tagger.device)
    moving = torch.zeros_like(movable)
    for name, g in zip(leaves, grads, strict=True):
        unit = batch.box.unit[name]
        movable |= (unit > 0).flatten(1).any(1)
        moving |= ((g * unit) != 0).flatten(1).any(1)
    probed = int(movable.sum())
    return int((movable & ~moving).sum()), probed


def score_spread(run: SpecRun) -> float:
    """The largest |difference| of class probabilities between two evaluations of the same
    events (0 for a deterministic model)."""
    inputs, _ = run.inputs("nominal")
    tagger = run.tagger
    head = take(inputs, slice(0, RANDOMISED_EVENTS), tagger.device)
    with tagger.frozen():
        first = tagger.evaluate(head).exp()
        second = tagger.evaluate(head).exp()
    if not first.numel():
        return 0.0
    return float((first - second).abs().max())


def probe_lines(
    run: SpecRun, attack: Attack, decision: Decision, correct: torch.Tensor, gradients: bool
) -> list[str]:
    """Warnings (lines starting WARNING) and passed notes of both probes; ``gradients``
    False skips the gradient probe (a gradient-free attack or fallback)."""
    lines = []
    spread = score_spread(run)
    if spread > RANDOMISED_TOLERANCE:
        lines.append(
            f"WARNING: the model's scores look randomised: two evaluations of the same "
            f"{RANDOMISED_EVENTS} events differ by up to {spread:.3g} in probability, so "
            "attacks follow noise and the fooling rate is unreliable (remove randomness from "
            "the model's forward pass in eval mode)"
        )
    if gradients:
        zero, probed = zero_gradient_events(run, attack, decision, correct)
        if probed and zero > ZERO_GRADIENT_SHARE * probed:
            lines.append(
                f"WARNING: the attack's input gradients are zero for {zero:,} of {probed:,} "
                f"correctly classified events ({100 * zero / probed:.3g}%): a gradient attack "
                "cannot move them, so its fooling rate is likely underestimated (saturated "
                'scores? try loss = "margin" with method = "apgd", or an ensemble with spsa)'
            )
        elif probed:
            lines.append(f"input gradients are nonzero for {probed - zero:,} of {probed:,} events")
    return lines
