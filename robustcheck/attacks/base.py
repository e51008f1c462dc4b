"""What every attack shares: the batch it works on and the gradient step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from robustcheck.attacks import STEPS
from robustcheck.decision import Decision
from robustcheck.envelope import Box, Inputs
from robustcheck.event_random import EventRandom
from robustcheck.spec import AttackSpec
from robustcheck.taggers.base import Tagger


@dataclass
class AttackBatch:
    """One batch of events on the device, with the box the attack must stay in."""

    tagger: Tagger
    nominal: Inputs
    target: torch.Tensor
    box: Box
    decision: Decision
    random: EventRandom  # the events' random streams (robustcheck.event_random)
    early_stop: bool = True
    features: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # per-event figures the attack records for this batch (see ``record``)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the box rounds discrete entries with the events' streams (see Box.project_)
        if self.box.random is None:
            self.box = replace(self.box, random=self.random)

    def start(self) -> Inputs:
        """Copies of the perturbed inputs, as leaves that record gradients."""
        return {name: self.nominal[name].clone().requires_grad_(True) for name in self.box.unit}

    def loss_and_grad(
        self, adv: Inputs, penalty: Callable[[Inputs], torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Input gradients of the attack loss (minus ``penalty``), and the events to stop moving.

        With ``early_stop`` those are the events already fooled; otherwise none.
        """
        log_probs = self.tagger.log_probs({**self.nominal, **adv})
        fooled = self.decision.decide(log_probs.detach()) != self.target
        if not self.early_stop:
            fooled = torch.zeros_like(fooled)
        loss = self.decision.loss(log_probs, self.target)
        if penalty is not None:
            loss = loss - penalty(adv)
        grads = torch.autograd.grad(loss, list(adv.values()))
        return list(grads), fooled

    @torch.no_grad()
    def signed_step_(
        self,
        adv: Inputs,
        grads: list[torch.Tensor],
        size: float,
        frozen: torch.Tensor,
        stochastic: bool = True,
    ) -> None:
        """Move each unfrozen event by ``size`` sigma along the gradient sign, then project.

        Integer and categorical entries are rounded by the projection: stochastically (a
        step of a fraction of a unit moves them with that probability), or, with
        ``stochastic`` False, to the nearest allowed value.
        """
        scale = (~frozen).to(next(iter(adv.values())).dtype).mul_(size)
        for (name, x), g in zip(adv.items(), grads, strict=False):
            step = g.sign_().mul_(self.box.unit[name])
            step.mul_(scale.view(-1, *([1] * (step.dim() - 1))))
            x.add_(step)
        self.box.project_(adv, stochastic)

    def subset(self, rows: torch.Tensor) -> AttackBatch:
        """The same attack on some events of the batch (``rows`` indexes them)."""
        return replace(
            self,
            nominal={name: x[rows] for name, x in self.nominal.items()},
            target=self.target[rows],
            box=self.box.subset(rows),
            random=self.random.subset(rows),
            outputs={},
        )

    def fork(self, label: str) -> AttackBatch:
        """The same batch drawing from the events' own streams for ``label`` (a part of the
        attack whose runs depend on the batch: a restart, an ensemble member, a probe)."""
        random = self.random.fork(label)
        return replace(self, random=random, box=replace(self.box, random=random))

    def record(self, name: str, values: torch.Tensor) -> None:
        """Keep a per-event figure (one float per event of this batch, e.g. min_epsilon's
        radius): the engine collects it row by row into ``Adversaries.per_event[name]``."""
        if values.shape[:1] != self.target.shape:
            raise ValueError(f"{name}: {tuple(values.shape)} values for {len(self.target)} events")
        self.outputs[name] = values.detach()

    @torch.no_grad()
    def fooled(self, adv: Inputs) -> torch.Tensor:
        """Which events the current adversarial values fool."""
        log_probs = self.tagger.log_probs({**self.nominal, **adv})
        return self.decision.decide(log_probs) != self.target


def step_settings(
    spec: AttackSpec, epsilon: float, random_start: bool = True
) -> tuple[int, float, bool]:
    """``steps``, ``step_size`` (default 2.5 epsilon / steps, Madry et al.) and
    ``random_start`` of an iterative attack's options."""
    options = spec.options
    steps = int(options.get("steps") or STEPS.default)
    step_size = options.get("step_size")
    start = options.get("random_start")
    return (
        steps,
        float(step_size) if step_size else 2.5 * epsilon / steps,
        random_start if start is None else bool(start),
    )


class Attack:
    """Base class: configured from an [attacks.NAME] table."""

    needs_gradients = True
    # whether a step of one event depends on the other events of its batch (a penalty on
    # the batch's distributions): then the engine runs fixed blocks of the sample
    couples_events = False

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        self.spec = spec
        self.epsilon = spec.epsilon
        self.seed = seed

    @property
    def stream_label(self) -> str:
        """What names the attack's random streams with its seed: its method."""
        return self.spec.method

    @property
    def uses_seed(self) -> bool:
        """Whether the attack draws random numbers, so whether its seed changes its outcome.

        An attack that draws none (no random start, no random directions) says False, and
        then neither its description nor a check's figures claim a seed.
        """
        return True

    def seed_note(self) -> str:
        """The seed as a description names it: ``seed N``, or ``no random start``."""
        return f"seed {self.seed}" if self.uses_seed else "no random start"

    def describe(self) -> str:
        return f"{self.spec.method} eps={self.epsilon:g} sigma, {self.seed_note()}"

    def perturb(self, batch: AttackBatch) -> Inputs:
        """Adversarial values of the perturbed inputs for this batch."""
        raise NotImplementedError

    def event_loss(self, batch: AttackBatch, log_probs: torch.Tensor) -> torch.Tensor:
        """The per-event loss whose input gradients the attack follows (the decision's cross
        entropy unless the attack says otherwise); sanity probes look at its gradients."""
        return batch.decision.event_loss(log_probs, batch.target)

    def use_spec(self, spec: Any) -> None:
        """Called with the whole validated spec before the attack runs: an attack that
        needs more than its own table finds it here (the ensemble its members' attack
        tables, constrained_pgd the ``[observables]``)."""

    def report(self) -> tuple[list[str], dict[str, int | float | str]]:
        """Notes on the run so far (lines for a check's details) and figures for its
        results; an attack that has nothing to add returns none."""
        return [], {}

    def tally(self) -> dict[str, list[float]]:
        """The counts behind ``report`` (summed over event ranges run elsewhere, on Dask
        workers, by ``add_tally``); an attack that keeps none returns none."""
        return {}

    def add_tally(self, tally: dict[str, list[float]]) -> None:
        """Add another run's ``tally`` (a range of events run by a copy of this attack)."""
