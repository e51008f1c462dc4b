"""Constrained PGD: fool the tagger while the input distributions stay unchanged.

The "hidden systematics" attack (arXiv:2605.07470, CONSERVAttack arXiv:2603.13970). It
maximises

    L = CE(f(x_adv), y) - lambda_chi2 * chi2(x, x_adv)
        - lambda_dist * N * D_all(x, x_adv)
        - lambda_class * sum_c N_c * D_c(x, x_adv)
        - lambda_observables * sum_g N_g * D_g(obs(x), obs(x_adv))

where chi2 is the squared pull (in sigma) of every moved entry and D measures, over a group of
events, how far the adversarial marginals (mean, width) and Pearson correlations are from the
nominal ones, in units of the nominal spread: ``D_all`` over the whole batch, ``D_c`` within
each true class ``c`` (the target decision of a correct tagger, see
:meth:`robustcheck.decision.Decision.target`: the label, or signal versus the rest with a
threshold), which are the quark- and gluon-enriched control regions an analyst calibrates in.
``N * D`` is the scale of a two-sample test statistic with N events, so each group weighs
as much as the test an analyst could run on it. ``D_g`` does the same for the spec's
``[observables]`` (jet mass, width...), computed differentiably from the attacked inputs, over
the batch and within each class. Two choices keep the sample statistically unchanged: each
event stops at the first point that fools the tagger, and events the attack does not fool are
returned at their nominal values. Only the events that need to move, move.

The nominal statistics and the class weights are computed once per batch; a step adds only
the penalty's own arithmetic (no host sync, no boolean indexing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustcheck.attacks.base import AttackBatch
from robustcheck.attacks.pgd import PGD
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec

TINY = 1e-12


@dataclass
class Moments:
    """Nominal means, widths and correlations of some entries, per group of events.

    ``weights`` is (entries, groups); the figures are (groups, features) and, for the
    correlations, (groups, features, features)."""

    weights: torch.Tensor
    total: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    corr: torch.Tensor
    moves: torch.Tensor  # (groups, features): 1.0 where the nominal spread is non-zero

    @classmethod
    def of(cls, values: torch.Tensor, weights: torch.Tensor) -> Moments:
        """``values`` (entries, features), ``weights`` (entries, groups)."""
        weights = weights.to(values.dtype)
        total = weights.sum(0).clamp_min(1.0)
        mean, std, corr = _moments(values, weights, total)
        return cls(weights, total, mean, std, corr, (std > 0).to(values.dtype))

    def distance(self, values: torch.Tensor) -> torch.Tensor:
        """Per group, the squared change of means, widths and correlations of ``values``
        from the nominal ones, in units of the nominal spread."""
        mean, std, corr = _moments(values, self.weights, self.total)
        scale = self.std.clamp_min(TINY)
        d_mean = (((mean - self.mean) / scale) ** 2 * self.moves).sum(1)
        d_std = (((std - self.std) / scale) ** 2 * self.moves).sum(1)
        both = self.moves.unsqueeze(2) * self.moves.unsqueeze(1)
        d_corr = ((corr - self.corr) ** 2 * both).sum((1, 2)) / 2
        return d_mean + d_std + d_corr


def _moments(
    values: torch.Tensor, weights: torch.Tensor, total: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted means (groups, features), widths and correlations (groups, features, features)."""
    mean = weights.T @ values / total.unsqueeze(1)
    # centred values per group: (groups, entries, features)
    centred = (values.unsqueeze(0) - mean.unsqueeze(1)) * weights.T.sqrt().unsqueeze(2)
    std = (centred.pow(2).sum(1) / total.unsqueeze(1)).sqrt()
    z = centred / std.clamp_min(TINY).unsqueeze(1)
    corr = z.transpose(1, 2) @ z / total.view(-1, 1, 1)
    return mean, std, corr


def distribution_distance(
    nominal: torch.Tensor, perturbed: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """Squared change of means, widths and correlations, in units of the nominal spread.

    ``nominal`` and ``perturbed`` are (entries, features); ``real`` weights the entries.
    """
    return Moments.of(nominal, real.reshape(-1, 1)).distance(perturbed)[0]


def group_weights(target: torch.Tensor, with_classes: bool) -> torch.Tensor:
    """(events, groups): the whole batch, then each class of ``target`` (one host sync to
    count the classes, once per batch)."""
    everything = torch.ones(len(target), 1, device=target.device)
    if not with_classes or len(target) == 0:
        return everything
    classes = torch.nn.functional.one_hot(target.long()).to(everything.dtype)
    return torch.cat([everything, classes], dim=1)


class ConstrainedPGD(PGD):
    couples_events = True  # the penalty compares the batch's distributions

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.lambda_chi2 = float(spec.options["lambda_chi2"])
        self.lambda_dist = float(spec.options["lambda_dist"])
        self.lambda_class = float(spec.options.get("lambda_class", 0.0) or 0.0)
        self.lambda_observables = float(spec.options.get("lambda_observables", 0.0) or 0.0)
        self.observables: Callable[[dict[str, torch.Tensor]], Any] | None = None
        self.observables_path: Path | None = None

    def use_spec(self, spec: Any) -> None:
        """Keep the spec's ``[observables]`` function, when it has one, for the penalty."""
        function = getattr(spec, "observables", None)
        if function and self.lambda_observables > 0:
            from robustcheck.observables import load_observables

            self.observables = load_observables(function, spec.path)
            self.observables_path = spec.path

    def describe(self) -> str:
        start = ", random start" if self.random_start else ""
        observables = (
            f", lambda_observables={self.lambda_observables:g}" if self.observables else ""
        )
        return (
            f"constrained_pgd eps={self.epsilon:g} sigma, {self.steps} steps of "
            f"{self.step_size:.3g}, lambda_chi2={self.lambda_chi2:g}, "
            f"lambda_dist={self.lambda_dist:g}, lambda_class={self.lambda_class:g}"
            f"{observables}{start}, {self.seed_note()}"
        )

    def penalty(self, batch: AttackBatch) -> Callable[[Inputs], torch.Tensor]:
        events = group_weights(batch.target, self.lambda_class > 0)
        # per group: lambda times its number of events (a test statistic's scale)
        lambdas = torch.full((events.shape[1],), self.lambda_class, device=events.device)
        lambdas[0] = self.lambda_dist
        scales = lambdas * events.sum(0)
        nominal: dict[str, Moments] = {}
        with torch.no_grad():
            for name in batch.box.unit:
                x0, real = batch.nominal[name], batch.box.real[name]
                features = x0.shape[-1]
                per_entry = real.to(events.dtype).reshape(len(x0), -1, 1) * events.unsqueeze(1)
                nominal[name] = Moments.of(
                    x0.reshape(-1, features), per_entry.reshape(-1, events.shape[1])
                )
        observed, per_class = self._observables_moments(batch)

        def term(adv: Inputs) -> torch.Tensor:
            total = next(iter(adv.values())).new_zeros(())
            for name, x in adv.items():
                x0, unit = batch.nominal[name], batch.box.unit[name]
                if self.lambda_chi2:
                    pull = (x - x0) / unit.clamp_min(1e-30) * (unit > 0)
                    total = total + self.lambda_chi2 * pull.pow(2).sum()
                moments = nominal[name]
                distance = moments.distance(x.reshape(-1, x.shape[-1]))
                total = total + (scales.to(distance.dtype) * distance).sum()
            if observed is not None:
                values = self._evaluate(batch, adv)
                distance = observed.distance(values)
                weight = self.lambda_observables * per_class.sum(0)
                total = total + (weight.to(distance.dtype) * distance).sum()
            return total

        return term

    def _evaluate(self, batch: AttackBatch, adv: Inputs) -> torch.Tensor:
        from robustcheck.observables import differentiable_observables

        assert self.observables is not None
        _, values = differentiable_observables(
            self.observables, {**batch.nominal, **adv}, self.observables_path
        )
        return values

    def _observables_moments(self, batch: AttackBatch) -> tuple[Moments | None, torch.Tensor]:
        """The nominal moments of the observables over the batch and within each class (the
        groups' weights come with them), or None without observables."""
        if self.observables is None or self.lambda_observables <= 0:
            return None, batch.target.new_zeros(0)
        events = group_weights(batch.target, True)
        with torch.no_grad():
            values = self._evaluate(batch, batch.nominal)
        return Moments.of(values, events), events

    def perturb(self, batch: AttackBatch) -> Inputs:
        adv = super().perturb(batch)
        fooled = batch.fooled(adv)
        out = {}
        for name, x in adv.items():
            keep = fooled.view(-1, *([1] * (x.dim() - 1)))
            out[name] = torch.where(keep, x, batch.nominal[name])
        return out
