"""A global energy-scale variation: x -> x * (1 + s * scale_sigma) for the named features."""

from __future__ import annotations

import torch

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec


class EnergyScale(Attack):
    """Tries s = +epsilon and s = -epsilon and keeps, per event, the one with the larger loss."""

    needs_gradients = False

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.scale_sigma = float(spec.options["scale_sigma"])
        self.features = list(spec.options["features"])

    def describe(self) -> str:
        return (
            f"energy_scale eps={self.epsilon:g} x {self.scale_sigma:g} on "
            f"{', '.join(self.features)}"
        )

    def perturb(self, batch: AttackBatch) -> Inputs:
        best: Inputs | None = None
        best_loss: torch.Tensor | None = None
        for sign in (1.0, -1.0):
            adv = {}
            for name, x in batch.nominal.items():
                if name not in batch.box.unit:
                    continue
                columns = [i for i, f in enumerate(batch.features[name]) if f in self.features]
                factor = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
                factor[columns] += sign * self.epsilon * self.scale_sigma
                movable = batch.box.unit[name] > 0
                adv[name] = torch.where(movable, x * factor, x)
            with torch.no_grad():
                log_probs = batch.tagger.evaluate({**batch.nominal, **adv})
                loss = torch.nn.functional.nll_loss(log_probs, batch.target, reduction="none")
            if best is None or best_loss is None:
                best, best_loss = adv, loss
            else:
                pick = loss > best_loss
                best = {
                    n: torch.where(pick.view(-1, *[1] * (v.dim() - 1)), v, best[n])
                    for n, v in adv.items()
                }
                best_loss = torch.maximum(loss, best_loss)
        assert best is not None
        return best
