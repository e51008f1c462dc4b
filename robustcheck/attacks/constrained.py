"""Constrained PGD: fool the tagger while the input distributions stay unchanged.

The "hidden systematics" attack (arXiv:2605.07470, CONSERVAttack arXiv:2603.13970). It
maximises

    L = CE(f(x_adv), y) - lambda_chi2 * chi2(x, x_adv) - lambda_dist * N * D(x, x_adv)

where chi2 is the squared pull (in sigma) of every moved entry and D measures, over the batch,
how far the adversarial marginals (mean, width) and Pearson correlations are from the nominal
ones, in units of the nominal spread. Two choices keep the sample statistically unchanged:
each event stops at the first point that fools the tagger, and events the attack does not fool
are returned at their nominal values. Only the events that need to move, move.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustcheck.attacks.base import AttackBatch
from robustcheck.attacks.pgd import PGD
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec


def distribution_distance(
    nominal: torch.Tensor, perturbed: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """Squared change of means, widths and correlations, in units of the nominal spread.

    ``nominal`` and ``perturbed`` are (entries, features); ``real`` weights the entries.
    """
    w = real.to(nominal.dtype).unsqueeze(1)
    total = w.sum().clamp_min(1.0)
    mean0 = (w * nominal).sum(0) / total
    mean1 = (w * perturbed).sum(0) / total
    centred0, centred1 = (nominal - mean0) * w.sqrt(), (perturbed - mean1) * w.sqrt()
    std0 = (centred0.pow(2).sum(0) / total).sqrt()
    std1 = (centred1.pow(2).sum(0) / total).sqrt()
    scale = std0.clamp_min(1e-12)
    moves = std0 > 0
    d_mean = (((mean1 - mean0) / scale) ** 2)[moves].sum()
    d_std = (((std1 - std0) / scale) ** 2)[moves].sum()
    z0 = centred0 / scale
    z1 = centred1 / std1.clamp_min(1e-12)
    corr0 = z0.T @ z0 / total
    corr1 = z1.T @ z1 / total
    both = moves.unsqueeze(0) & moves.unsqueeze(1)
    d_corr = ((corr1 - corr0) ** 2)[both].sum() / 2
    return d_mean + d_std + d_corr


class ConstrainedPGD(PGD):
    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.lambda_chi2 = float(spec.options["lambda_chi2"])
        self.lambda_dist = float(spec.options["lambda_dist"])

    def describe(self) -> str:
        start = ", random start" if self.random_start else ""
        return (
            f"constrained_pgd eps={self.epsilon:g} sigma, {self.steps} steps of "
            f"{self.step_size:.3g}, lambda_chi2={self.lambda_chi2:g}, "
            f"lambda_dist={self.lambda_dist:g}{start}, {self.seed_note()}"
        )

    def penalty(self, batch: AttackBatch) -> Callable[[Inputs], torch.Tensor]:
        def term(adv: Inputs) -> torch.Tensor:
            total = next(iter(adv.values())).new_zeros(())
            for name, x in adv.items():
                x0, unit = batch.nominal[name], batch.box.unit[name]
                pull = (x - x0) / unit.clamp_min(1e-30) * (unit > 0)
                total = total + self.lambda_chi2 * pull.pow(2).sum()
                real = batch.box.real[name]
                features = x.shape[-1]
                distance = distribution_distance(
                    x0.reshape(-1, features), x.reshape(-1, features), real.reshape(-1)
                )
                total = total + self.lambda_dist * len(x) * distance
            return total

        return term

    def perturb(self, batch: AttackBatch) -> Inputs:
        adv = super().perturb(batch)
        fooled = batch.fooled(adv)
        out = {}
        for name, x in adv.items():
            keep = fooled.view(-1, *([1] * (x.dim() - 1)))
            out[name] = torch.where(keep, x, batch.nominal[name])
        return out
