"""Random search: draw points in the epsilon-sigma box and keep the first that fools.

It needs forward passes only (``tagger.evaluate``), so it runs on onnxruntime directly and on
models that cannot be differentiated. Events it does not fool keep their nominal values. It is
also the reference of the gradient-masking sanity check: a gradient attack that fools fewer
events than random points in the same box is not following useful gradients.

This module also holds what the gradient-free attacks share: batched forward passes of many
candidate points per event and the per-event attack loss.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.decision import Decision
from robustcheck.envelope import Box, Inputs
from robustcheck.event_random import EventRandom
from robustcheck.spec import AttackSpec
from robustcheck.taggers.base import Tagger

FORWARD_ROWS = 16384  # events per forward pass when several candidates per event are stacked


def event_loss(decision: Decision, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-event attack loss (``Decision.event_loss``); its sum is ``decision.loss``."""
    return decision.event_loss(log_probs, target)


def forward(tagger: Tagger, nominal: Inputs, candidates: Inputs) -> torch.Tensor:
    """Log-probabilities (copies, events, classes) of stacked candidate points.

    ``candidates`` hold (copies, events, ...) values of the perturbed inputs; the other inputs
    (masks, unperturbed ones) are repeated from ``nominal``. Forward passes only.
    """
    copies, events = next(iter(candidates.values())).shape[:2]
    feed = {}
    for name, x in nominal.items():
        if name in candidates:
            feed[name] = candidates[name].reshape(copies * events, *x.shape[1:])
        else:
            feed[name] = x.repeat(copies, *([1] * (x.dim() - 1)))
    rows = copies * events
    parts = [
        tagger.evaluate({name: x[start : start + FORWARD_ROWS] for name, x in feed.items()})
        for start in range(0, rows, FORWARD_ROWS)
    ]
    return torch.cat(parts).reshape(copies, events, -1)


def subset(inputs: Inputs, rows: torch.Tensor) -> Inputs:
    return {name: x[rows] for name, x in inputs.items()}


def random_points(box: Box, nominal: Inputs, random: EventRandom, corners: bool = False) -> Inputs:
    """Random points of the attack's set per event, shaped (copies, events, ...): one per
    copy number of ``random`` (:meth:`EventRandom.with_copies`), else one.

    Uniform in the box (or its corners), then projected into the set (onto the Mahalanobis
    ball of correlated groups). Entries that may not move keep their values bit for bit.
    """
    copies = 1 if random.copies is None else len(random.copies)
    out = {}
    for name in box.unit:
        lower, upper, x = box.lower[name], box.upper[name], nominal[name]
        u = random.uniform((copies, *x.shape), x.dtype, copies=True)
        out[name] = torch.where(u < 0.5, lower, upper) if corners else lower + u * (upper - lower)
    return project(replace(box, random=random), nominal, out)


def project(box: Box, nominal: Inputs, points: Inputs) -> Inputs:
    """``points`` (copies, events, ...) projected into the attack's set, in place.

    Entries that may not move are reset to their nominal values, bit for bit.
    """
    box.project_(points)
    for name, x in points.items():
        x.copy_(torch.where(box.unit[name] > 0, x, nominal[name]))
    return points


class RandomSearch(Attack):
    """``samples`` random points per event in the box; the first that fools is kept.

    Without early stopping (a full-budget attack) each event keeps the point with the largest
    attack loss instead, or its nominal values when no point beats them.
    """

    needs_gradients = False

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.samples = int(spec.options["samples"])
        self.corners = bool(spec.options.get("corners", False))

    def describe(self) -> str:
        kind = "box corners" if self.corners else "uniform points"
        return (
            f"random eps={self.epsilon:g} sigma, {self.samples} {kind} per event, seed {self.seed}"
        )

    @torch.no_grad()
    def perturb(self, batch: AttackBatch) -> Inputs:
        adv = {name: batch.nominal[name].clone() for name in batch.box.unit}
        done = torch.zeros(len(batch.target), dtype=torch.bool, device=batch.target.device)
        best = None
        if not batch.early_stop:
            nominal = forward(batch.tagger, batch.nominal, {k: x[None] for k, x in adv.items()})
            best = event_loss(batch.decision, nominal[0], batch.target)
        samples = batch.random.fork("samples")
        drawn = 0
        while drawn < self.samples and not bool(done.all()):
            rows = torch.nonzero(~done).flatten()
            copies = min(self.samples - drawn, max(1, FORWARD_ROWS // len(rows)))
            drawn += copies
            nominal = subset(batch.nominal, rows)
            numbers = torch.arange(drawn - copies, drawn, device=rows.device)
            random = samples.subset(rows).with_copies(numbers)
            points = random_points(batch.box.subset(rows), nominal, random, self.corners)
            log_probs = forward(batch.tagger, nominal, points).flatten(0, 1)
            target = batch.target[rows].repeat(copies)
            if best is None:  # early stop: the first point that fools
                fools = (batch.decision.decide(log_probs) != target).view(copies, -1)
                keep, pick = fools.any(dim=0), fools.to(torch.int8).argmax(dim=0)
                done[rows[keep]] = True
            else:  # full budget: the point with the largest loss so far
                loss = event_loss(batch.decision, log_probs, target).view(copies, -1)
                top, pick = loss.max(dim=0)
                keep = top > best[rows]
                best[rows[keep]] = top[keep]
            for name, x in points.items():
                adv[name][rows[keep]] = x[pick[keep], torch.nonzero(keep).flatten()]
        return adv
