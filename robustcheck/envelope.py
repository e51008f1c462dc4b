"""The uncertainty envelope: per-feature sigma, bounds, frozen entries, padding masks, groups.

An attack of radius epsilon may move each entry within ``epsilon * sigma`` of its nominal
value, intersected with the feature's physical bounds. Frozen features, integer features
without a sigma, entries equal to a feature's ``default`` placeholder and padded entries
(mask == 0) never move.

Discrete features. An ``integer`` feature with a sigma moves by whole units within
``+-floor(epsilon * sigma)`` of its nominal value (sigma per entry, so a relative sigma gives
``floor(epsilon * relative * |x|)``), within its (whole-number) bounds. A categorical feature
(``choices = [...]``) may take any listed value when epsilon >= 1 (a swap counts as a
one-sigma move), on entries whose nominal value is listed; other entries never move.

Attacks keep their iterates on these values through :meth:`Box.project_`, which every attack
calls after each step: it rounds integer entries to whole units and categorical ones to a
listed value, stochastically with the batch's seeded generator (rounding up with probability
equal to the fractional part, so that a small signed-gradient step moves an integer entry
with probability proportional to the step: "probabilistic integer perturbation"), or to the
nearest value where there is no generator or a deterministic attack asks for it. Every point
an attack evaluates, and every point it returns, is therefore integral and inside the box.

Groups (``[envelope.NAME] groups``) add two things. A correlated group replaces the box of its
features by the Mahalanobis ball ``d^T C^-1 d <= epsilon^2`` of its covariance C, per event
(per constituent for particle inputs). A coherent group defines a shift with one variable ``s``
per event shared by all its features and constituents, ``x -> x * (1 + relative * s) +
absolute * s``, which the ``shift`` attack moves within ``[-epsilon, epsilon]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from robustcheck.errors import DataError
from robustcheck.event_random import EventRandom
from robustcheck.spec import EnvelopeGroup, FeatureEnvelope, Spec

Inputs = dict[str, torch.Tensor]

# Newton steps on the Lagrange multiplier of the ellipsoid projection: it converges
# monotonically and quadratically from zero: 10 reach float64 precision even for a
# correlation matrix of condition number 1e6 and a point 1e4 radii away.
NEWTON_STEPS = 20
_TINY = 1e-300
# slack for float32 rounding in floor(epsilon * sigma): 0.3 * 10 is 3.0000001 or 2.9999998
WHOLE_SLACK = 1e-4


def project_onto_ellipsoid(
    y: torch.Tensor,
    basis: torch.Tensor,
    eigenvalues: torch.Tensor,
    radius: float,
    steps: int = NEWTON_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean projection of points ``y`` (..., k) onto ``{z : z^T C^-1 z <= radius^2}``.

    ``C = basis @ diag(eigenvalues) @ basis.T`` is symmetric positive definite. Points inside
    are returned unchanged. For a point outside, the closest point is ``(I + mu C^-1)^-1 y``
    with the multiplier ``mu > 0`` that puts it on the surface; in the eigenbasis
    ``p_i = w_i l_i / (l_i + mu)``, and Newton's method on ``1/|p(mu)|_C - 1/radius``
    (concave and increasing, as in trust-region solvers) converges to ``mu`` from below
    without overshooting. A fixed number of steps keeps the loop free of host syncs.
    Returns the projected points and which ones were outside.
    """
    w = y @ basis
    inside_length2 = (w.square() / eigenvalues).sum(-1)
    outside = inside_length2 > radius * radius
    if radius <= 0.0:
        return torch.zeros_like(y), outside
    c2 = w.square() * eigenvalues
    mu = torch.zeros_like(inside_length2)
    for _ in range(steps):
        denominator = eigenvalues + mu.unsqueeze(-1)
        length2 = (c2 / denominator.square()).sum(-1)
        slope = (c2 / denominator.pow(3)).sum(-1)
        step = (length2.sqrt() - radius) * length2 / (radius * slope).clamp_min(_TINY)
        mu = (mu + step).clamp_min(0.0)
    p = w * eigenvalues / (eigenvalues + mu.unsqueeze(-1))
    length = (p.square() / eigenvalues).sum(-1).sqrt()
    p = p * (radius / length.clamp_min(_TINY)).clamp_max(1.0).unsqueeze(-1)
    return torch.where(outside.unsqueeze(-1), p @ basis.T, y), outside


@dataclass(frozen=True)
class CoherentShift:
    """A coherent group of one input: ``x -> x * (1 + relative * s) + absolute * s``.

    ``relative`` and ``absolute`` are (features,) vectors, zero outside the group; ``members``
    marks the group's features. ``s`` is one value per event, shared by every constituent.
    """

    name: str
    relative: torch.Tensor
    absolute: torch.Tensor
    members: torch.Tensor

    @classmethod
    def from_group(cls, group: EnvelopeGroup, features: Sequence[str]) -> CoherentShift:
        members = torch.tensor([f in group.features for f in features], dtype=torch.bool)
        zeros = torch.zeros(len(features), dtype=torch.float32)
        return cls(
            name=group.name,
            relative=torch.where(members, float(group.relative or 0.0), zeros),
            absolute=torch.where(members, float(group.absolute or 0.0), zeros),
            members=members,
        )

    def to(self, device: torch.device | str) -> CoherentShift:
        return CoherentShift(
            self.name, self.relative.to(device), self.absolute.to(device), self.members.to(device)
        )


@dataclass(frozen=True)
class Ellipsoid:
    """A correlated group: displacements ``d`` of its features with ``d^T C^-1 d <= eps^2``.

    Held in sigma units ``z = d / scale`` (``scale = sqrt(diag C)``), where the set is
    ``z^T R^-1 z <= eps^2`` for the correlation matrix ``R = basis diag(eigenvalues) basis^T``.
    Its bounding box is exactly the box of ``eps * scale`` per feature.
    """

    name: str
    columns: torch.Tensor
    scale: torch.Tensor
    basis: torch.Tensor
    eigenvalues: torch.Tensor

    @classmethod
    def from_group(cls, group: EnvelopeGroup, features: Sequence[str]) -> Ellipsoid:
        covariance = torch.tensor(group.covariance, dtype=torch.float64)
        scale = covariance.diagonal().sqrt()
        correlation = covariance / scale.unsqueeze(0) / scale.unsqueeze(1)
        eigenvalues, basis = torch.linalg.eigh((correlation + correlation.T) / 2)
        columns = torch.tensor([features.index(f) for f in group.features], dtype=torch.long)
        return cls(group.name, columns, scale, basis, eigenvalues)

    def to(self, device: torch.device | str) -> Ellipsoid:
        return Ellipsoid(
            self.name,
            self.columns.to(device),
            self.scale.to(device),
            self.basis.to(device),
            self.eigenvalues.to(device),
        )

    def mahalanobis2(self, delta: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis length of displacements ``delta`` (..., features of the input)."""
        return self._length2(delta[..., self.columns].double())

    def _length2(self, delta: torch.Tensor) -> torch.Tensor:
        w = (delta / self.scale) @ self.basis
        return (w.square() / self.eigenvalues).sum(-1)

    @torch.no_grad()
    def project_(self, x: torch.Tensor, center: torch.Tensor, radius: float) -> None:
        """Move the group's entries of ``x`` to their projection onto the ball, in place."""
        nominal = center[..., self.columns]
        current = x[..., self.columns]
        z = (current - nominal).double() / self.scale
        projected, outside = project_onto_ellipsoid(z, self.basis, self.eigenvalues, radius)
        moved = (nominal.double() + projected * self.scale).to(x.dtype)
        x[..., self.columns] = torch.where(outside.unsqueeze(-1), moved, current)

    @torch.no_grad()
    def shrink_(self, x: torch.Tensor, center: torch.Tensor, radius: float) -> None:
        """Pull entries outside the ball radially back onto it, in place.

        After bounds have clipped a projected point; the nominal point lies in the box and
        the box is convex, so the result stays inside the box as well.
        """
        nominal = center[..., self.columns]
        current = x[..., self.columns]
        delta = (current - nominal).double()
        length2 = self._length2(delta)
        outside = length2 > radius * radius
        factor = (radius / length2.sqrt().clamp_min(_TINY)).unsqueeze(-1)
        moved = (nominal.double() + delta * factor).to(x.dtype)
        x[..., self.columns] = torch.where(outside.unsqueeze(-1), moved, current)


@dataclass(frozen=True)
class Category:
    """A categorical feature of one input: its column and its listed values, sorted."""

    column: int
    values: torch.Tensor
    gap: float  # mean distance between neighbouring values: an attack's step unit

    @classmethod
    def from_choices(cls, column: int, choices: Sequence[float]) -> Category:
        values = sorted(choices)
        return cls(
            column,
            torch.tensor(values, dtype=torch.float32),
            (values[-1] - values[0]) / (len(values) - 1),
        )

    def to(self, device: torch.device | str) -> Category:
        return Category(self.column, self.values.to(device), self.gap)

    def snap(self, v: torch.Tensor, draw: torch.Tensor | None) -> torch.Tensor:
        """Values ``v`` (inside [first, last]) rounded to a neighbouring listed value:
        the upper one with probability equal to the relative position between the two
        (with ``draw``, uniform numbers shaped like ``v``), else the nearer one."""
        values = self.values
        index = torch.searchsorted(values, v.contiguous(), right=True).sub_(1)
        index = index.clamp_(0, len(values) - 2)
        low, high = values[index], values[index + 1]
        position = ((v - low) / (high - low)).clamp_(0.0, 1.0)
        up = position > 0.5 if draw is None else draw < position
        return torch.where(up, high, low)


@dataclass(frozen=True)
class InputEnvelope:
    """Per-feature envelope tensors of one model input, shaped (features,)."""

    name: str
    features: tuple[str, ...]
    absolute: torch.Tensor
    relative: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    movable: torch.Tensor
    default: torch.Tensor
    mask: str | None = None
    shifts: tuple[CoherentShift, ...] = ()
    ellipsoids: tuple[Ellipsoid, ...] = ()
    integer: torch.Tensor | None = None  # (features,) bool: moves by whole units
    categories: tuple[Category, ...] = ()
    units: tuple[str | None, ...] = ()  # per feature, from the envelope's `unit`
    # derived: the integer and categorical columns, in order (Python ints, and as a tensor on
    # the envelope's device), read at every projection without a host sync
    discrete: tuple[int, ...] = field(init=False, repr=False, compare=False)
    discrete_index: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = {c.column for c in self.categories}
        if self.integer is not None:
            columns |= {int(c) for c in torch.nonzero(self.integer.cpu()).flatten()}
        discrete = tuple(sorted(columns))
        object.__setattr__(self, "discrete", discrete)
        index = torch.tensor(discrete, dtype=torch.int64, device=self.movable.device)
        object.__setattr__(self, "discrete_index", index)

    def unit(self, column: int) -> str | None:
        """The unit of the feature in ``column``, or None."""
        return self.units[column] if column < len(self.units) else None

    @property
    def has_integer(self) -> bool:
        return self.integer is not None

    @property
    def continuous(self) -> torch.Tensor:
        """(features,) bool: features that move continuously (movable and not discrete)."""
        discrete = torch.zeros_like(self.movable)
        if self.integer is not None:
            discrete |= self.integer
        for category in self.categories:
            discrete[category.column] = True
        return self.movable & ~discrete

    @classmethod
    def from_features(
        cls,
        name: str,
        entries: Mapping[str, FeatureEnvelope],
        mask: str | None = None,
        groups: Sequence[EnvelopeGroup] = (),
    ) -> InputEnvelope:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        items = list(entries.values())
        integer = [e.integer and e.movable and not e.categorical for e in items]
        categories = tuple(
            Category.from_choices(column, e.choices)
            for column, e in enumerate(items)
            if e.choices is not None
        )
        return cls(
            name=name,
            features=tuple(entries),
            absolute=column([e.absolute or 0.0 for e in items]),
            relative=column([e.relative or 0.0 for e in items]),
            lower=column([-math.inf if e.min is None else e.min for e in items]),
            upper=column([math.inf if e.max is None else e.max for e in items]),
            movable=torch.tensor([e.movable for e in items], dtype=torch.bool),
            default=column([math.nan if e.default is None else e.default for e in items]),
            mask=mask,
            shifts=tuple(CoherentShift.from_group(g, list(entries)) for g in groups if g.coherent),
            ellipsoids=tuple(
                Ellipsoid.from_group(g, list(entries)) for g in groups if g.correlated
            ),
            integer=torch.tensor(integer, dtype=torch.bool) if any(integer) else None,
            categories=categories,
            units=tuple(e.unit for e in items),
        )

    def to(self, device: torch.device | str) -> InputEnvelope:
        moved = {
            k: getattr(self, k).to(device)
            for k in ("absolute", "relative", "lower", "upper", "movable", "default")
        }
        return replace(
            self,
            **moved,
            shifts=tuple(shift.to(device) for shift in self.shifts),
            ellipsoids=tuple(ellipsoid.to(device) for ellipsoid in self.ellipsoids),
            integer=None if self.integer is None else self.integer.to(device),
            categories=tuple(category.to(device) for category in self.categories),
        )

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        """Sigma of every entry: absolute and relative parts added in quadrature."""
        return torch.hypot(self.absolute.expand_as(x), self.relative * x.abs())

    def movable_entries(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Entries an attack may change: movable features, not placeholders, not padding."""
        movable = self.movable.expand_as(x) & (x != self.default)
        if mask is not None:
            movable = movable & (mask != 0).unsqueeze(-1)
        return movable

    def shift_in_sigma(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """|x - x0| in units of each entry's sigma (0 where sigma is 0); a categorical entry
        counts 1 where it was swapped (a swap is a one-sigma move)."""
        sigma = self.sigma(x0)
        pulls = torch.where(sigma > 0, (x - x0).abs() / sigma.clamp_min(1e-30), 0.0)
        for category in self.categories:
            column = category.column
            pulls[..., column] = (x[..., column] != x0[..., column]).to(pulls.dtype)
        return pulls

    @torch.no_grad()
    def round_(
        self,
        x: torch.Tensor,
        center: torch.Tensor,
        unit: torch.Tensor,
        random: EventRandom | None,
    ) -> None:
        """Round integer entries of ``x`` (inside their box) to whole units from ``center``
        and categorical ones to a listed value, in place; stochastically with the events'
        ``random`` streams (unbiased: the expected value is kept), else to the nearest.
        Entries ``unit`` does not let move keep their values. ``x`` is shaped like
        ``center`` or has a leading axis of copies (random points per event)."""
        copies = x.dim() > center.dim()
        columns = self.discrete_index
        draws = None
        if random is not None and self.discrete:
            draws = random.uniform(x.shape, x.dtype, copies, columns)
        if self.integer is not None:
            where = self.integer[..., columns]
            delta = x[..., columns] - center[..., columns]
            if draws is None:
                whole = delta.round()
            else:
                whole = delta.floor()
                whole.add_((draws < delta - whole).to(x.dtype))
            x[..., columns] = torch.where(where, center[..., columns] + whole, x[..., columns])
        for category in self.categories:
            column = category.column
            v = x[..., column]
            moves = unit[..., column] > 0
            draw = None
            if draws is not None:
                draw = draws[..., self.discrete.index(column)]
            x[..., column] = torch.where(moves, category.snap(v, draw), v)


@dataclass
class Box:
    """The set an attack of radius epsilon may reach, for one batch of events.

    ``unit`` is one sigma for entries that may move and zero for the others, so that a
    step of ``alpha * unit * direction`` moves only what the envelope allows. ``real`` marks
    the entries that exist (not padding), shaped like the input without its feature axis.
    """

    lower: Inputs
    upper: Inputs
    unit: Inputs
    real: Inputs
    center: Inputs = field(default_factory=dict)
    epsilon: float = 0.0
    envelopes: dict[str, InputEnvelope] = field(default_factory=dict)
    random: EventRandom | None = None  # the events' streams, to round discrete entries

    def project_(self, adv: Inputs, stochastic: bool = True) -> None:
        """Project adversarial inputs into the attack's set, in place.

        Entries of correlated groups go to their exact (Euclidean, in sigma units) projection
        onto the Mahalanobis ball; then every entry is clamped into its box. Where a physical
        bound, a placeholder or padding cuts a ball, the clamped point is pulled radially back
        into the ball (feasible, though not always the closest such point). Last, integer
        entries are rounded to whole units and categorical ones to a listed value:
        stochastically with the box's per-event ``random`` streams (unless ``stochastic`` is
        False), else to the nearest (see :meth:`InputEnvelope.round_`).
        """
        random = self.random if stochastic else None
        for name, x in adv.items():
            env = self.envelopes.get(name)
            ellipsoids = env.ellipsoids if env is not None and self.epsilon > 0 else ()
            center = self.center.get(name)
            for ellipsoid in ellipsoids:
                ellipsoid.project_(x, center, self.epsilon)
            torch.clamp(x, self.lower[name], self.upper[name], out=x)
            for ellipsoid in ellipsoids:
                ellipsoid.shrink_(x, center, self.epsilon)
            if env is not None and (env.has_integer or env.categories):
                env.round_(x, center, self.unit[name], random)

    def subset(self, rows: torch.Tensor | slice) -> Box:
        """The set of some events of the batch (everything per event indexed by ``rows``)."""

        def pick(values: Inputs) -> Inputs:
            return {name: x[rows] for name, x in values.items()}

        return Box(
            pick(self.lower),
            pick(self.upper),
            pick(self.unit),
            pick(self.real),
            pick(self.center),
            self.epsilon,
            self.envelopes,
            None if self.random is None else self.random.subset(rows),
        )

    def coherent_groups(self) -> list[str]:
        """Names of the coherent groups of the perturbed inputs, each once, in spec order."""
        names = [s.name for env in self.envelopes.values() for s in env.shifts]
        return list(dict.fromkeys(names))

    def shifted(self, s: torch.Tensor, names: Sequence[str]) -> Inputs:
        """Inputs moved by coherent groups: group ``names[j]`` by ``s[:, j]``, per event.

        ``x -> x * (1 + relative * s) + absolute * s`` on the group's movable, real entries,
        then within the features' physical bounds (never cutting off the nominal value).
        Other features, padding, placeholders and frozen features stay nominal, bit for bit.
        Integer members are rounded to whole units from their nominal value (straight-through:
        the gradient with respect to ``s`` is that of the unrounded shift), so every shifted
        point is integral where the data are.
        Differentiable with respect to ``s``; returns only inputs that hold such a group.
        """
        names = list(names)
        out = {}
        for name, env in self.envelopes.items():
            active = [(names.index(g.name), g) for g in env.shifts if g.name in names]
            if not active:
                continue
            x0 = self.center[name]
            view = (-1,) + (1,) * (x0.dim() - 1)
            scale: torch.Tensor | float = 1.0
            offset: torch.Tensor | float = 0.0
            members = torch.zeros_like(env.movable)
            for column, group in active:
                variable = s[:, column].view(view).to(x0.dtype)
                scale = scale + variable * group.relative
                offset = offset + variable * group.absolute
                members = members | group.members
            lower = torch.minimum(env.lower, x0)
            upper = torch.maximum(env.upper, x0)
            moved = torch.clamp(x0 * scale + offset, lower, upper)
            if env.integer is not None:
                whole = x0 + (moved - x0).round()
                rounded = moved + (whole - moved).detach()  # straight-through
                moved = torch.where(env.integer, rounded, moved)
            keep = env.movable_entries(x0, self.real[name]) & members
            out[name] = torch.where(keep, moved, x0)
        return out


class Envelope:
    """The envelope of every perturbed model input."""

    def __init__(self, inputs: Mapping[str, InputEnvelope]) -> None:
        self.inputs = dict(inputs)

    @classmethod
    def from_spec(cls, spec: Spec) -> Envelope:
        return cls(
            {
                name: InputEnvelope.from_features(
                    name, spec.envelope[name], spec.inputs[name].mask, spec.groups.get(name, ())
                )
                for name in spec.perturbed_inputs()
            }
        )

    def to(self, device: torch.device | str) -> Envelope:
        return Envelope({name: env.to(device) for name, env in self.inputs.items()})

    def box(self, nominal: Inputs, epsilon: float) -> Box:
        """The per-entry box of radius ``epsilon`` sigma around ``nominal``, within bounds."""
        lower, upper, unit, real = {}, {}, {}, {}
        for name, env in self.inputs.items():
            x = nominal[name]
            mask = nominal[env.mask] if env.mask is not None else None
            real[name] = (mask != 0) if mask is not None else x.new_ones(x.shape[:-1], dtype=bool)
            moves = env.movable_entries(x, mask)
            step = env.sigma(x) * moves
            radius = epsilon * step
            low = torch.minimum(torch.maximum(x - radius, env.lower), x)
            high = torch.maximum(torch.minimum(x + radius, env.upper), x)
            if env.integer is not None:
                # whole units: floor(epsilon * sigma), and no further than the bounds allow
                reach = torch.floor(radius + WHOLE_SLACK)
                down = torch.minimum(reach, torch.floor(x - env.lower + WHOLE_SLACK))
                up = torch.minimum(reach, torch.floor(env.upper - x + WHOLE_SLACK))
                low = torch.where(env.integer, x - down.clamp_min(0.0), low)
                high = torch.where(env.integer, x + up.clamp_min(0.0), high)
                step = torch.where(env.integer & (high == low), 0.0, step)
            for category in env.categories:
                column = category.column
                value = x[..., column]
                swaps = moves[..., column] & torch.isin(value, category.values)
                if epsilon < 1.0:
                    swaps = torch.zeros_like(swaps)
                low[..., column] = torch.where(swaps, category.values[0], value)
                high[..., column] = torch.where(swaps, category.values[-1], value)
                step[..., column] = swaps.to(step.dtype) * category.gap
            lower[name], upper[name], unit[name] = low, high, step
        center = {name: nominal[name] for name in self.inputs}
        return Box(lower, upper, unit, real, center, float(epsilon), dict(self.inputs))

    def check_shapes(self, inputs: Mapping[str, tuple[int, ...]], source: str) -> None:
        """Refuse data whose last axis or mask shape does not match the spec."""
        for name, env in self.inputs.items():
            shape = inputs[name]
            if len(shape) < 2 or shape[-1] != len(env.features):
                raise DataError(
                    f"input `{name}` has shape {tuple(shape)}, but [inputs.{name}] names "
                    f"{len(env.features)} features along the last axis",
                    file=source,
                    field=f"inputs.{name}.features",
                    fix="list one feature name per column of the array",
                )
            if env.mask is not None and tuple(inputs[env.mask]) != tuple(shape[:-1]):
                raise DataError(
                    f"mask `{env.mask}` has shape {tuple(inputs[env.mask])}, but input "
                    f"`{name}` has shape {tuple(shape)}: the mask must be {tuple(shape[:-1])}",
                    file=source,
                    field=f"inputs.{name}.mask",
                    fix="the mask marks each entry (event, particle) of the particle array",
                )
