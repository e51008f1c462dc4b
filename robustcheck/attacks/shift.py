"""Shift: a coherent systematic variation of envelope groups, one shared shift per event.

A coherent group (``[envelope.NAME] groups = [{ features = ["pt"], coherent = true,
relative = 0.02 }]``) moves its features of every constituent of a jet by one variable ``s``
per event, ``x -> x * (1 + relative * s) + absolute * s``, as a jet-energy-scale variation
does. Coherent groups of one name in several inputs share ``s`` (constituent pt and jet pt).

``mode = "up"`` / ``"down"`` apply ``s = +epsilon`` / ``-epsilon`` to every event, like an
analysis's +-1 sigma systematic. ``mode = "worst"`` searches each event's worst ``s`` in
``[-epsilon, epsilon]``: signed-gradient steps on ``s``, projected onto the interval, then the
two end points as candidates too, so it fools every event that ``up`` or ``down`` fools.
Features outside the groups stay nominal; bounds, padding, placeholders and frozen features are
respected (see :meth:`robustcheck.envelope.Box.shifted`).
"""

from __future__ import annotations

import torch

from robustcheck.attacks.base import Attack, AttackBatch, step_settings
from robustcheck.envelope import Inputs
from robustcheck.errors import SpecError
from robustcheck.spec import AttackSpec


class Shift(Attack):
    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        options = spec.options
        self.mode = str(options.get("mode", "worst"))
        self.groups = tuple(options.get("groups") or ())
        self.steps, self.step_size, self.random_start = step_settings(spec, self.epsilon, False)
        self.needs_gradients = self.mode == "worst"

    @property
    def uses_seed(self) -> bool:
        """Only the worst-case search from a random start draws random numbers."""
        return self.mode == "worst" and self.random_start

    def describe(self) -> str:
        groups = ", ".join(self.groups) if self.groups else "every coherent group"
        if self.mode == "worst":
            start = ", random start" if self.random_start else ""
            return (
                f"shift worst case within +-{self.epsilon:g} sigma of {groups}, {self.steps} "
                f"steps of {self.step_size:.3g}{start}, {self.seed_note()}"
            )
        sign = "+" if self.mode == "up" else "-"
        return f"shift {sign}{self.epsilon:g} sigma of {groups} (fixed variation)"

    def group_names(self, batch: AttackBatch) -> list[str]:
        """The coherent groups this attack moves, in the order of the shift variables."""
        known = batch.box.coherent_groups()
        names = list(self.groups) or known
        unknown = [name for name in names if name not in known]
        if not names or unknown:
            raise SpecError(
                f"no coherent group named {', '.join(f'`{n}`' for n in unknown)}"
                if unknown
                else "method `shift` moves coherent groups, but the envelope has none",
                field=f"attacks.{self.spec.name}",
                fix='add groups = [{ features = ["pt"], coherent = true, relative = 0.02 }] '
                "to an [envelope.NAME] table",
            )
        return names

    def perturb(self, batch: AttackBatch) -> Inputs:
        names = self.group_names(batch)
        if self.mode == "worst":
            s = self._worst_case(batch, names)
        else:
            s = self._constant(batch, names, self.epsilon if self.mode == "up" else -self.epsilon)
        with torch.no_grad():
            return batch.box.shifted(s, names)

    @staticmethod
    def _constant(batch: AttackBatch, names: list[str], value: float) -> torch.Tensor:
        return torch.full((len(batch.target), len(names)), value, device=batch.target.device)

    def _worst_case(self, batch: AttackBatch, names: list[str]) -> torch.Tensor:
        """The shift variables (events, groups) of the worst case found for each event."""
        epsilon = self.epsilon
        early_stop = batch.early_stop
        s = self._constant(batch, names, 0.0)
        if self.random_start:
            noise = batch.random.uniform(s.shape)
            s = noise.mul_(2).sub_(1).mul_(epsilon)
        for _ in range(self.steps):
            s.requires_grad_(True)
            log_probs = batch.tagger.log_probs({**batch.nominal, **batch.box.shifted(s, names)})
            loss = batch.decision.loss(log_probs, batch.target)
            (grad,) = torch.autograd.grad(loss, [s])
            with torch.no_grad():
                step = grad.sign_().mul_(self.step_size)
                if early_stop:
                    fooled = batch.decision.decide(log_probs.detach()) != batch.target
                    step.mul_((~fooled).to(step.dtype).unsqueeze(1))
                s = (s.detach() + step).clamp_(-epsilon, epsilon)
        with torch.no_grad():
            best = s
            best_loss, best_fooled = self._score(batch, best, names)
            for value in (epsilon, -epsilon):
                candidate = self._constant(batch, names, value)
                loss, fooled = self._score(batch, candidate, names)
                if early_stop:  # keep the first fooling point; else fooling, or a larger loss
                    take = ~best_fooled & (fooled | (loss > best_loss))
                else:
                    take = loss > best_loss
                best = torch.where(take.unsqueeze(1), candidate, best)
                best_loss = torch.where(take, loss, best_loss)
                best_fooled = torch.where(take, fooled, best_fooled)
        return best

    @staticmethod
    def _score(
        batch: AttackBatch, s: torch.Tensor, names: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each event's attack loss at shift ``s``, and whether it is fooled there."""
        log_probs = batch.tagger.log_probs({**batch.nominal, **batch.box.shifted(s, names)})
        fooled = batch.decision.decide(log_probs) != batch.target
        return batch.decision.event_loss(log_probs, batch.target), fooled
