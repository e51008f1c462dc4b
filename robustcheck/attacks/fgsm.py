"""FGSM: a single signed-gradient step of epsilon sigma."""

from __future__ import annotations

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.envelope import Inputs


class FGSM(Attack):
    @property
    def uses_seed(self) -> bool:
        """One step from the nominal point: nothing random."""
        return False

    def describe(self) -> str:
        return f"fgsm eps={self.epsilon:g} sigma (deterministic)"

    def perturb(self, batch: AttackBatch) -> Inputs:
        adv = batch.start()
        grads, fooled = batch.loss_and_grad(adv)
        # deterministic: discrete entries go to the nearest allowed value
        batch.signed_step_(adv, grads, self.epsilon, fooled, stochastic=False)
        return {name: x.detach() for name, x in adv.items()}
