"""min_epsilon: each correctly classified event's robustness radius, by bisection over epsilon.

The radius of an event is the smallest epsilon (in sigma units, in the same set as every
attack: the box of epsilon sigma per entry within the physical bounds, frozen and padded
entries fixed, correlated groups in their Mahalanobis ball, integer entries by whole units,
categorical entries swapped from epsilon 1 on) at which PGD fools it:

1. PGD at ``max_epsilon`` (``steps`` signed steps of 2.5 epsilon / steps from a random start,
   each event stopping once fooled, exactly as ``method = "pgd"``). An event it does not fool
   gets radius ``inf``: robust up to ``max_epsilon``, censored there.
2. ``bisections`` rounds: each fooled event is attacked again by the same PGD at the middle of
   its bracket, every event at its own epsilon (its box, steps and random start scaled to it).
   Fooled: the bracket's top drops to the sigma-norm of the fooling point found (at most the
   probe's epsilon); not fooled: the bottom rises to the probe's epsilon.

``probe = "apgd"`` runs APGD (adaptive steps from 2 epsilon, margin loss) instead of PGD at
each probe, in the same way: every probe is that attack at the event's own epsilon.

An event's radius is the sigma-norm of the closest fooling point found: that point lies in
the set of radius ``radius`` and fools the tagger. PGD failed at the bracket's bottom, so the
radius overstates where PGD starts to fool the event by at most the bracket's width,
``max_epsilon / 2**bisections`` (the resolution): the curve "radius <= e" can miss an event
PGD at e fools only when its radius lies within one resolution above e. With the default 10
bisections that bias was not measurable against PGD runs (benchmarks/min_epsilon.py); with 7 it
was (up to 21 of 17,121 events, all one way). The adversarial inputs are the
closest fooling points (for events never fooled: where PGD at ``max_epsilon`` ended). Each
round is one host sync; the step loop is PGD's, sync-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from robustcheck import registry
from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.envelope import WHOLE_SLACK, Box, Ellipsoid, Inputs, project_onto_ellipsoid
from robustcheck.errors import SpecError
from robustcheck.spec import AttackSpec

if TYPE_CHECKING:
    from robustcheck.core import Adversaries

RADIUS = "radius"  # the per-event figure the attack records (Adversaries.per_event)


@dataclass
class ScaledBox(Box):
    """The set of radius ``radius[i]`` sigma around event ``i``, for a PGD run at epsilon 1.

    ``unit`` is scaled by each event's radius, so PGD's random start and steps (in units of
    ``epsilon * unit`` with epsilon 1) are those of PGD at the event's own epsilon; ``lower``
    and ``upper`` are the event's box, as ``Envelope.box`` makes it at that epsilon: integer
    entries within floor(epsilon * sigma) whole units, categorical ones swapping only from
    epsilon 1 on. Correlated groups are projected onto each event's own Mahalanobis ball here;
    ``epsilon`` stays 0 so that ``Box.project_`` only clamps (and rounds discrete entries).
    """

    radius: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    @classmethod
    def around(cls, box: Box, radius: torch.Tensor) -> ScaledBox:
        """``box`` (the box at the largest radius) shrunk to ``radius`` sigma per event."""
        lower, upper, unit = {}, {}, {}
        for name, sigma in box.unit.items():
            scale = radius.view(-1, *([1] * (sigma.dim() - 1))).to(sigma.dtype)
            reach = sigma * scale
            center, low_max, high_max = box.center[name], box.lower[name], box.upper[name]
            low = torch.maximum(center - reach, low_max)
            high = torch.minimum(center + reach, high_max)
            env = box.envelopes.get(name)
            integer = env.integer if env is not None else None
            if integer is not None:  # whole units: floor(epsilon * sigma)
                whole = torch.floor(reach + WHOLE_SLACK)
                low = torch.where(integer, torch.maximum(center - whole, low_max), low)
                high = torch.where(integer, torch.minimum(center + whole, high_max), high)
                reach = torch.where(integer & (high == low), 0.0, reach)
            for category in env.categories if env is not None else ():
                column = category.column  # any listed value from epsilon 1 on, else none
                swaps = (scale[..., 0] >= 1.0) & (sigma[..., column] > 0)
                value = center[..., column]
                low[..., column] = torch.where(swaps, low_max[..., column], value)
                high[..., column] = torch.where(swaps, high_max[..., column], value)
                reach[..., column] = torch.where(swaps, reach[..., column], 0.0)
            lower[name], upper[name], unit[name] = low, high, reach
        base = {f.name: getattr(box, f.name) for f in fields(Box)}
        base.update(lower=lower, upper=upper, unit=unit, epsilon=0.0)
        return cls(**base, radius=radius)

    def project_(self, adv: Inputs, stochastic: bool = True) -> None:
        ellipsoids = {
            name: env.ellipsoids for name, env in self.envelopes.items() if env.ellipsoids
        }
        for name, groups in ellipsoids.items():
            for ellipsoid in groups:
                _into_ball_(ellipsoid, adv[name], self.center[name], self._view(adv[name]), False)
        # clamps into the box and rounds discrete entries (epsilon 0: no ellipsoid step there)
        super().project_(adv, stochastic)
        for name, groups in ellipsoids.items():
            for ellipsoid in groups:
                _into_ball_(ellipsoid, adv[name], self.center[name], self._view(adv[name]), True)

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """Each event's radius (above 0: it divides), shaped to broadcast over ``x``'s groups."""
        return self.radius.double().clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))

    def subset(self, rows: torch.Tensor | slice) -> ScaledBox:
        base = Box.subset(self, rows)
        values = {f.name: getattr(base, f.name) for f in fields(Box)}
        return ScaledBox(**values, radius=self.radius[rows])


@torch.no_grad()
def _into_ball_(
    ellipsoid: Ellipsoid, x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, shrink: bool
) -> None:
    """Ellipsoid.project_ (or shrink_, radially) with one radius per event, in place.

    In units of the radius the ball is the unit ball, and the Euclidean projection onto it
    scales: proj_r(z) = r * proj_1(z / r).
    """
    columns, scale = ellipsoid.columns, ellipsoid.scale
    nominal, current = center[..., columns], x[..., columns]
    z = (current - nominal).double() / scale / radius
    if shrink:
        length = ((z @ ellipsoid.basis).square() / ellipsoid.eigenvalues).sum(-1).sqrt()
        outside = length > 1.0
        moved_z = z / length.clamp_min(1e-300).unsqueeze(-1)
    else:
        moved_z, outside = project_onto_ellipsoid(z, ellipsoid.basis, ellipsoid.eigenvalues, 1.0)
    moved = (nominal.double() + moved_z * scale * radius).to(x.dtype)
    x[..., columns] = torch.where(outside.unsqueeze(-1), moved, current)


def sigma_norm(box: Box, adv: Inputs) -> torch.Tensor:
    """The smallest radius whose set holds each event's point: its largest pull in sigma
    (movable entries; 1 for a swapped categorical entry) and, for correlated groups, its
    Mahalanobis length. ``box`` is a plain box (``unit`` one sigma)."""
    norm = None
    for name, sigma in box.unit.items():
        delta = adv[name] - box.center[name]
        pull = torch.where(sigma > 0, delta.abs() / sigma.clamp_min(1e-30), 0.0)
        env = box.envelopes.get(name)
        for category in env.categories if env is not None else ():
            pull[..., category.column] = (delta[..., category.column] != 0).to(pull.dtype)
        event = pull.flatten(1).amax(1) if pull.dim() > 1 else pull
        for ellipsoid in env.ellipsoids if env is not None else ():
            length = ellipsoid.mahalanobis2(delta).sqrt().to(event.dtype)
            event = torch.maximum(event, length.flatten(1).amax(1) if length.dim() > 1 else length)
        norm = event if norm is None else torch.maximum(norm, event)
    assert norm is not None
    return norm


class MinEpsilon(Attack):
    """Bisection over each event's epsilon with early-stopped PGD (see the module's doc)."""

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        self.max_epsilon = float(spec.options["max_epsilon"])
        epsilon = spec.options.get("epsilon")  # e.g. SpecRun.adversaries(epsilon=...)
        if epsilon is not None and float(epsilon) != self.max_epsilon:
            raise SpecError(
                "min_epsilon measures every epsilon up to max_epsilon: it runs at no other",
                field=f"attacks.{spec.name}.epsilon",
                fix="read its curve at an epsilon (fooling_rate epsilon, event_radii)",
            )
        spec = replace(spec, options={**spec.options, "epsilon": self.max_epsilon})
        super().__init__(spec, seed)
        self.bisections = int(spec.options["bisections"])
        self.steps = int(spec.options["steps"])
        self.probe_method = str(spec.options.get("probe") or "pgd")
        # the probe at epsilon 1 in a ScaledBox is that attack at each event's own epsilon
        options: dict[str, object] = {"epsilon": 1.0, "steps": self.steps, "seed": seed}
        if spec.options.get("random_start") is not None:
            options["random_start"] = bool(spec.options["random_start"])
        where = f"attacks.{spec.name}"
        values = registry.attack_options(self.probe_method, options, where, "")
        self.inner: Attack = registry.attacks()[self.probe_method].load()(
            replace(spec, method=self.probe_method, options=values), seed
        )

    @property
    def uses_seed(self) -> bool:
        return self.inner.uses_seed

    @property
    def stream_label(self) -> str:
        """The probe attack's: the first probe at max_epsilon is that attack, number for number."""
        return self.inner.stream_label

    @property
    def resolution(self) -> float:
        """The widest bracket left after the bisections (sigma)."""
        return self.max_epsilon / 2**self.bisections

    def describe(self) -> str:
        step = "2.5 eps/steps" if self.probe_method == "pgd" else "adaptive steps"
        start = ", random start" if getattr(self.inner, "random_start", False) else ""
        return (
            f"min_epsilon up to eps={self.max_epsilon:g} sigma: {self.probe_method} with "
            f"{self.steps} steps ({step}) per probe, {self.bisections} bisections (resolution "
            f"{self.resolution:.3g} sigma){start}, {self.seed_note()}"
        )

    def probe(
        self, batch: AttackBatch, epsilon: torch.Tensor, number: int = 0
    ) -> tuple[Inputs, torch.Tensor]:
        """The probe attack with each event at its own ``epsilon``: the points and which of
        them fool. The first probe (``number`` 0) draws the probe attack's own streams, so at
        ``max_epsilon`` it is that attack run alone; each bisection round its own."""
        if number:
            batch = batch.fork(f"probe {number}")
        scaled = replace(batch, box=ScaledBox.around(batch.box, epsilon), outputs={})
        adv = self.inner.perturb(scaled)
        # the last point is checked too, as the fooling rate of a run at one epsilon checks it
        return adv, scaled.fooled(adv)

    def perturb(self, batch: AttackBatch) -> Inputs:
        n = len(batch.target)
        top = torch.full((n,), self.max_epsilon, dtype=torch.float64, device=batch.target.device)
        if not batch.early_stop:  # a full-budget run: PGD at max_epsilon, no radii
            return self.probe(batch, top, 0)[0]
        bottom = torch.zeros_like(top)
        out, fooled = self.probe(batch, top, 0)
        top = torch.where(fooled, sigma_norm(batch.box, out).double().clamp_max(top), top)
        for number in range(1, self.bisections + 1):
            active = torch.nonzero(fooled & (top - bottom > self.resolution)).flatten()
            if len(active) == 0:  # one host sync per round, none per step
                break
            sub = batch.subset(active)
            middle = (top[active] + bottom[active]) / 2
            adv, hit = self.probe(sub, middle, number)
            norm = sigma_norm(sub.box, adv).double().clamp_max(middle)
            closer = hit & (norm < top[active])
            rows = active[closer]
            for name, x in adv.items():
                out[name][rows] = x[closer]
            top[rows] = norm[closer]
            bottom[active] = torch.where(hit, bottom[active], middle)
        # for a fooled event the bracket's top is the sigma-norm of its closest fooling point
        batch.record(RADIUS, torch.where(fooled, top, math.inf))
        return out


def event_radii(outcome: Adversaries) -> np.ndarray:
    """The radius of every correctly classified event, in sigma; ``inf`` where the attack did
    not fool it up to ``max_epsilon`` (censored there).

    It follows the run's verdicts: an event the re-evaluated adversarial point does not fool
    counts as not fooled (inf), and one it fools without a recorded radius gets max_epsilon.
    """
    if RADIUS not in outcome.per_event:
        raise ValueError(f"attack {outcome.attack!r} recorded no radius (not min_epsilon)")
    radius = outcome.per_event[RADIUS].numpy()
    correct, fooled = outcome.correct.numpy(), outcome.fooled.numpy()
    radius = np.where(fooled, radius, np.inf)
    radius = np.where(fooled & ~np.isfinite(radius), outcome.epsilon, radius)
    return radius[correct]


def fooled_within(radii: np.ndarray, epsilon: float) -> int:
    """How many events are fooled within ``epsilon`` sigma (radius <= epsilon)."""
    return int(np.count_nonzero(radii <= epsilon))
