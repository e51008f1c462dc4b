"""Ensemble: the per-event worst case of several attacks in one epsilon box (as AutoAttack).

Members run in the listed order, each only on the events the earlier members did not fool,
so an event is never attacked again once fooled and the ensemble costs at most the sum of its
members. The run's notes name how many events each member fooled first, and when gradient-
free members (spsa, random) fool events the gradient members before them missed, the figures
``n_fooled_gradient`` and ``n_fooled_gradient_free`` let the gradient-masking check warn.

Members are [attacks.NAME] tables of the spec or the built-ins of
``robustcheck.attacks.ENSEMBLE_SHORTHANDS`` (a table of the same name wins); every member
runs at the ensemble's epsilon (a scan's too) and draws its random numbers from the
ensemble's random stream (its seed). Without early stopping (an AUC under attack) every
member attacks every event and each event keeps the point of largest loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from robustcheck import registry
from robustcheck.attacks import ENSEMBLE_SHORTHANDS
from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.envelope import Inputs
from robustcheck.errors import SpecError
from robustcheck.spec import AttackSpec


class Ensemble(Attack):
    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.names = [str(name) for name in spec.options["attacks"]]
        self.members: list[Attack] | None = None
        self.attacked = [0] * len(self.names)
        self.fooled_first = [0] * len(self.names)
        self.seconds = [0.0] * len(self.names)
        self.every_event = False  # ran without early stopping: every member on every event

    def use_spec(self, spec: Any) -> None:
        """Build the members from the spec's attack tables (or the built-ins) and pass the
        spec on to each (a constrained_pgd member finds the ``[observables]`` there)."""
        self._build(spec.attacks if spec is not None else {})
        for member in self._members():
            member.use_spec(spec)

    def _build(self, attacks: Mapping[str, AttackSpec]) -> None:
        members = []
        for name in self.names:
            table = attacks.get(name)
            if table is not None:
                options = {**table.options, "epsilon": self.epsilon, "seed": self.seed}
                member_spec, seed = replace(table, options=options), self.seed
            elif name in ENSEMBLE_SHORTHANDS:
                method, fixed = ENSEMBLE_SHORTHANDS[name]
                table_options = {"epsilon": self.epsilon, "seed": self.seed, **fixed}
                where = f"attacks.{self.spec.name}.attacks"
                options = registry.attack_options(method, table_options, where, "")
                member_spec, seed = AttackSpec(name, method, options), self.seed
            else:
                raise SpecError(
                    f"ensemble member {name!r} is neither an attack table nor a built-in",
                    field=f"attacks.{self.spec.name}.attacks",
                    fix=f"name an [attacks.NAME] table or one of {', '.join(ENSEMBLE_SHORTHANDS)}",
                )
            declared = registry.attacks()[member_spec.method]
            members.append(declared.load()(member_spec, seed))
        self.members = members

    def _members(self) -> list[Attack]:
        if self.members is None:  # used outside a spec run: built-in members only
            self._build({})
        assert self.members is not None
        return self.members

    @property
    def needs_gradients(self) -> bool:  # type: ignore[override]
        return any(member.needs_gradients for member in self._members())

    @property
    def uses_seed(self) -> bool:
        return any(member.uses_seed for member in self._members())

    def event_loss(self, batch: AttackBatch, log_probs: torch.Tensor) -> torch.Tensor:
        """The first gradient member's loss (the cross entropy when there is none)."""
        for member in self._members():
            if member.needs_gradients:
                return member.event_loss(batch, log_probs)
        return super().event_loss(batch, log_probs)

    def describe(self) -> str:
        members = "; ".join(
            f"{name}: {member.describe()}"
            for name, member in zip(self.names, self._members(), strict=True)
        )
        return f"ensemble eps={self.epsilon:g} sigma of [{members}]"

    def perturb(self, batch: AttackBatch) -> Inputs:
        members = self._members()
        if not batch.early_stop:
            return self._worst_case(batch, members)
        out = {name: batch.nominal[name].clone() for name in batch.box.unit}
        open_rows = torch.arange(len(batch.target), device=batch.target.device)
        for i, member in enumerate(members):
            if not len(open_rows):
                break
            started = time.perf_counter()
            sub = (batch if i == 0 else batch.subset(open_rows)).fork(f"member {i}")
            adv = member.perturb(sub)
            fooled = sub.fooled(adv)
            n_fooled = int(fooled.sum())  # one host sync per member and batch
            self.seconds[i] += time.perf_counter() - started
            self.attacked[i] += len(open_rows)
            self.fooled_first[i] += n_fooled
            for name, x in adv.items():
                out[name][open_rows] = x
            open_rows = open_rows[~fooled]
        return out

    def _worst_case(self, batch: AttackBatch, members: list[Attack]) -> Inputs:
        """Every member on every event; each event keeps the point of largest loss."""
        self.every_event = True
        out = {name: batch.nominal[name].clone() for name in batch.box.unit}
        best = torch.full((len(batch.target),), -math.inf, device=batch.target.device)
        already = torch.zeros_like(batch.target, dtype=torch.bool)
        for i, member in enumerate(members):
            started = time.perf_counter()
            adv = member.perturb(batch.fork(f"member {i}"))
            with torch.no_grad():
                log_probs = batch.tagger.log_probs({**batch.nominal, **adv})
                loss = batch.decision.event_loss(log_probs, batch.target)
                fooled = batch.decision.decide(log_probs) != batch.target
            better = loss > best
            best = torch.maximum(best, loss)
            for name, x in adv.items():
                keep = better.view(-1, *([1] * (x.dim() - 1)))
                out[name] = torch.where(keep, x, out[name])
            self.fooled_first[i] += int((fooled & ~already).sum())
            already |= fooled
            self.attacked[i] += len(batch.target)
            self.seconds[i] += time.perf_counter() - started
        return out

    def report(self) -> tuple[list[str], dict[str, int | float | str]]:
        members = self._members()
        parts = [
            f"{name} {k:,} of {n:,} ({s:.3g} s)"
            for name, k, n, s in zip(
                self.names, self.fooled_first, self.attacked, self.seconds, strict=True
            )
        ]
        how = (
            "each run on every event (events fooled first by each)"
            if self.every_event
            else "each run on the events the earlier ones did not fool"
        )
        lines = [f"ensemble members, {how}: " + ", ".join(parts)]
        figures: dict[str, int | float | str] = {
            f"n_fooled_by_{name}": k for name, k in zip(self.names, self.fooled_first, strict=True)
        }
        gradient = [m.needs_gradients for m in members]
        if True in gradient and False in gradient[gradient.index(True) :]:
            first = gradient.index(True)
            after = range(first, len(members))
            figures["n_fooled_gradient"] = sum(self.fooled_first[i] for i in after if gradient[i])
            figures["n_fooled_gradient_free"] = sum(
                self.fooled_first[i] for i in after if not gradient[i]
            )
            figures["n_attacked"] = self.attacked[first]
            figures["gradient_free_members"] = ", ".join(
                self.names[i] for i in after if not gradient[i]
            )
        return lines, figures

    def tally(self) -> dict[str, list[float]]:
        return {
            "attacked": list(self.attacked),
            "fooled_first": list(self.fooled_first),
            "seconds": list(self.seconds),
        }

    def add_tally(self, tally: dict[str, list[float]]) -> None:
        for i in range(len(self.names)):
            self.attacked[i] += int(tally["attacked"][i])
            self.fooled_first[i] += int(tally["fooled_first"][i])
            self.seconds[i] += tally["seconds"][i]
