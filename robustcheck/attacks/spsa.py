"""SPSA: signed steps along a finite-difference gradient estimate (Uesato et al. 2018).

Each step draws ``samples`` random sign directions v per event and probes the loss at
x + delta*v and x - delta*v (in sigma units, inside the box); the loss differences weight the
directions into a gradient estimate, and x moves ``step_size`` sigma along its sign, projected
onto the box. Forward passes only, so it runs on onnxruntime directly and on models with
non-differentiable steps. A probe that already fools is kept, and an event stops moving as soon
as its decision flips. Every point the model sees lies inside the box.
"""

from __future__ import annotations

import torch

from robustcheck.attacks.base import Attack, AttackBatch, step_settings
from robustcheck.attacks.random_search import event_loss, forward, project, random_points, subset
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec


class SPSA(Attack):
    needs_gradients = False

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.steps, self.step_size, self.random_start = step_settings(spec, self.epsilon)
        self.samples = int(spec.options["samples"])
        delta = spec.options.get("delta")
        self.delta = float(delta) if delta else self.epsilon / 4

    def describe(self) -> str:
        start = ", random start" if self.random_start else ""
        return (
            f"spsa eps={self.epsilon:g} sigma, {self.steps} steps of {self.step_size:.3g}, "
            f"{self.samples} direction pairs of delta {self.delta:.3g}{start}, seed {self.seed}"
        )

    @torch.no_grad()
    def perturb(self, batch: AttackBatch) -> Inputs:
        box = batch.box
        if self.random_start:
            start = random_points(box, batch.nominal, batch.random.fork("start"))
            adv = {name: x[0] for name, x in start.items()}
        else:
            adv = {name: batch.nominal[name].clone() for name in box.unit}
        everyone = torch.arange(len(batch.target), device=batch.target.device)
        done = self._fools(batch, adv, everyone)
        for _ in range(self.steps):
            rows = torch.nonzero(~done).flatten() if batch.early_stop else everyone
            if not len(rows):
                break
            done[rows] = self._step(batch, adv, rows)
        return adv

    def _fools(self, batch: AttackBatch, adv: Inputs, rows: torch.Tensor) -> torch.Tensor:
        points = {name: x[rows].unsqueeze(0) for name, x in adv.items()}
        log_probs = forward(batch.tagger, subset(batch.nominal, rows), points)[0]
        return batch.decision.decide(log_probs) != batch.target[rows]

    def _step(self, batch: AttackBatch, adv: Inputs, rows: torch.Tensor) -> torch.Tensor:
        """One SPSA step for the events ``rows`` (updated in ``adv``); which of them now fool.

        With early stopping an event whose probe fools keeps that probe and moves no further.
        """
        nominal, box = subset(batch.nominal, rows), batch.box.subset(rows)
        target = batch.target[rows]
        x = subset(adv, rows)
        estimate = {name: torch.zeros_like(v) for name, v in x.items()}
        found = torch.zeros(len(rows), dtype=torch.bool, device=target.device)
        for _ in range(self.samples):
            directions, probes = {}, {}
            for name, value in x.items():
                signs = box.random.uniform_like(value) < 0.5
                directions[name] = signs.to(value.dtype).mul_(2).sub_(1)
                offset = self.delta * box.unit[name] * directions[name]
                probes[name] = torch.stack((value + offset, value - offset))
            project(box, nominal, probes)
            log_probs = forward(batch.tagger, nominal, probes).flatten(0, 1)
            pairs = target.repeat(2)
            loss = event_loss(batch.decision, log_probs, pairs).view(2, -1)
            if batch.early_stop:
                fools = (batch.decision.decide(log_probs) != pairs).view(2, -1)
                for side in (0, 1):  # torch.where, not masked assignment: no host sync
                    take = fools[side] & ~found
                    for name in x:
                        keep = take.view(-1, *([1] * (x[name].dim() - 1)))
                        x[name] = torch.where(keep, probes[name][side], x[name])
                    found |= take
            weight = loss[0] - loss[1]
            for name, direction in directions.items():
                estimate[name].add_(direction * weight.view(-1, *([1] * (direction.dim() - 1))))
        moving = (~found).to(next(iter(x.values())).dtype)
        for name, value in x.items():
            step = estimate[name].sign_().mul_(box.unit[name]).mul_(self.step_size)
            value.add_(step.mul_(moving.view(-1, *([1] * (step.dim() - 1)))))
        project(box, nominal, x)
        for name, value in x.items():
            adv[name][rows] = value
        return found | self._fools(batch, adv, rows)
