"""PGD: projected signed-gradient steps inside the epsilon-sigma box (Madry et al.).

An event stops moving as soon as its decision flips, so the attack returns the first
fooling point it finds rather than wandering on. Every ``COMPACT_EVERY`` steps, once the
fooled events are at least ``COMPACT_SHARE`` of the batch, they leave it, so no more
gradients are spent on them (one host sync per check, not per step).

Integer and categorical features move jointly with the continuous ones: the projection after
each step rounds them stochastically with the batch's seeded generator (see
:meth:`robustcheck.envelope.Box.project_`), so a step of a fraction of a unit moves an entry
one unit along the gradient's sign with that probability, and every iterate the model sees is
integral and inside the box.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustcheck.attacks.base import Attack, AttackBatch, step_settings
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec


class PGD(Attack):
    COMPACT_SHARE = 1 / 32
    COMPACT_EVERY = 5

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.steps, self.step_size, self.random_start = step_settings(spec, self.epsilon)

    @property
    def uses_seed(self) -> bool:
        """Only a random start draws random numbers."""
        return self.random_start

    def describe(self) -> str:
        start = ", random start" if self.random_start else ""
        return (
            f"pgd eps={self.epsilon:g} sigma, {self.steps} steps of {self.step_size:.3g}"
            f"{start}, {self.seed_note()}"
        )

    def perturb(self, batch: AttackBatch) -> Inputs:
        adv = batch.start()
        if self.random_start:
            with torch.no_grad():
                for name, x in adv.items():
                    noise = batch.random.uniform_like(x)
                    x.add_(noise.mul_(2).sub_(1).mul_(self.epsilon).mul_(batch.box.unit[name]))
                batch.box.project_(adv)
        penalty = self.penalty(batch)
        # a penalty over the whole batch (constrained_pgd) needs every event in it
        compact = penalty is None and batch.early_stop
        out = {name: x.detach().clone() for name, x in adv.items()}
        rows = torch.arange(len(batch.target), device=batch.target.device)
        for step in range(self.steps):
            grads, fooled = batch.loss_and_grad(adv, penalty)
            if compact and step % self.COMPACT_EVERY == self.COMPACT_EVERY - 1:
                n_fooled = int(fooled.sum())
                if n_fooled >= self.COMPACT_SHARE * len(fooled):
                    done = torch.nonzero(fooled).flatten()
                    keep = torch.nonzero(~fooled).flatten()
                    for name, x in adv.items():
                        out[name][rows[done]] = x.detach()[done]
                    if len(keep) == 0:
                        return out
                    rows, batch = rows[keep], batch.subset(keep)
                    adv = {name: x.detach()[keep].requires_grad_(True) for name, x in adv.items()}
                    grads, fooled = [g[keep] for g in grads], fooled[keep]
            batch.signed_step_(adv, grads, self.step_size, fooled)
        for name, x in adv.items():
            out[name][rows] = x.detach()
        return out

    def penalty(self, batch: AttackBatch) -> Callable[[Inputs], torch.Tensor] | None:
        """A term subtracted from the loss (none for plain PGD)."""
        return None
