"""Loss surfaces: the tagger's loss along each feature axis, in sigma units around each event.

Every event is moved along one feature (or a pair of features) by ``t`` sigma of that feature,
for ``points`` values of ``t`` from ``-epsilon`` to ``+epsilon``, and the loss (the negative
log-likelihood of the event's true class) or the discriminant (the signal-class probability)
is averaged over the events. A flat mean loss within the envelope marks a tagger that small
shifts do not hurt; a sharp rise marks one they do (the plateau-versus-peak picture of
Stein et al., arXiv:2303.14511).

A move along feature ``f`` shifts the entry of ``f`` of every real (not padded) particle of an
event by ``t`` times that entry's own sigma, then clamps it into the feature's ``min``/``max``
(never cutting off the nominal value), exactly as the attack box does. Frozen and integer
features have no axis; placeholders (``default``) and padding never move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from robustcheck.decision import Decision
from robustcheck.engine import evaluate
from robustcheck.envelope import Envelope, Inputs
from robustcheck.errors import SpecError
from robustcheck.taggers.base import Tagger

if TYPE_CHECKING:
    from robustcheck.core import SpecRun

QUANTITIES = ("loss", "discriminant")


@dataclass(frozen=True)
class Axis:
    """One movable feature: its model input, its column and its display name."""

    input: str
    column: int
    name: str


@dataclass
class LossSurface:
    """Mean loss (or discriminant) around the events, as arrays.

    ``profiles[k, i]`` is the mean at offset ``offsets[i]`` sigma along ``features[k]``;
    ``grid[i, j]`` the mean at ``offsets[i]`` along ``grid_features[0]`` and ``offsets[j]``
    along ``grid_features[1]``; ``nominal`` the mean at no offset.
    """

    quantity: str
    epsilon: float
    offsets: np.ndarray
    features: list[str]
    profiles: np.ndarray
    nominal: float
    n_events: int
    grid_features: tuple[str, str] | None = None
    grid: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def increase(self) -> np.ndarray:
        """Per feature: the largest rise of the mean above its nominal value within epsilon."""
        return self.profiles.max(axis=1) - self.nominal

    def sharpest(self) -> tuple[str, float, float]:
        """The feature whose mean rises most: (name, rise, offset in sigma where it peaks)."""
        rises = self.increase()
        k = int(np.argmax(rises))
        return self.features[k], float(rises[k]), float(self.offsets[np.argmax(self.profiles[k])])

    def grid_increase(self) -> float | None:
        """The largest rise of the mean on the 2-D grid, or None without a grid."""
        return None if self.grid is None else float(self.grid.max() - self.nominal)

    def profile(self, feature: str) -> np.ndarray:
        """The mean along one feature's axis."""
        return self.profiles[self.features.index(feature)]


def movable_axes(envelope: Envelope) -> list[Axis]:
    """Every continuously movable feature (not frozen, integer or categorical), named
    ``feature`` (or ``input.feature`` with several inputs)."""
    several = len(envelope.inputs) > 1
    return [
        Axis(name, column, f"{name}.{feature}" if several else feature)
        for name, env in envelope.inputs.items()
        for column, feature in enumerate(env.features)
        if bool(env.continuous[column])
    ]


def find_axis(axes: list[Axis], envelope: Envelope, wanted: str, where: str) -> Axis:
    """The axis of a feature named ``feature`` or ``input.feature``; SpecError otherwise."""
    for axis in axes:
        feature = envelope.inputs[axis.input].features[axis.column]
        if wanted in (axis.name, f"{axis.input}.{feature}"):
            return axis
    frozen = [
        f
        for name, env in envelope.inputs.items()
        for column, f in enumerate(env.features)
        if not bool(env.continuous[column]) and wanted in (f, f"{name}.{f}")
    ]
    reason = (
        "is frozen, integer or categorical, so it has no axis"
        if frozen
        else "is not a perturbed feature"
    )
    raise SpecError(
        f"feature {wanted!r} {reason}",
        field=where,
        fix=f"one of: {', '.join(a.name for a in axes)}",
    )


def _shifted(envelope: Envelope, inputs: Inputs, moves: list[tuple[Axis, torch.Tensor]]) -> Inputs:
    """Copies of ``inputs``, one per row of the offsets, each moved along its axes.

    ``moves`` pairs an axis with offsets of shape (copies,); the result stacks the copies
    along the event axis: copy-major, so row ``c * n + i`` is event ``i`` at copy ``c``.
    """
    copies = len(moves[0][1])
    n = len(next(iter(inputs.values())))
    out = {name: x.repeat(copies, *([1] * (x.dim() - 1))) for name, x in inputs.items()}
    for axis, offsets in moves:
        env = envelope.inputs[axis.input]
        x = inputs[axis.input]
        mask = inputs[env.mask] if env.mask is not None else None
        column = axis.column
        sigma = env.sigma(x)[..., column] * env.movable_entries(x, mask)[..., column]
        value = x[..., column]
        lower = torch.minimum(env.lower[column], value)
        upper = torch.maximum(env.upper[column], value)
        view = (copies,) + (1,) * value.dim()
        moved = value.unsqueeze(0) + offsets.view(view).to(value.dtype) * sigma.unsqueeze(0)
        moved = torch.minimum(torch.maximum(moved, lower), upper)
        target = out[axis.input].view(copies, n, *x.shape[1:])
        target[..., column] = moved
    return out


def _per_event(
    log_probs: torch.Tensor, labels: torch.Tensor, quantity: str, decision: Decision
) -> torch.Tensor:
    if quantity == "discriminant":
        return log_probs[:, decision.signal_class].double().exp()
    return -log_probs.gather(1, labels.view(-1, 1).long()).squeeze(1).double()


def loss_surface(
    tagger: Tagger,
    envelope: Envelope,
    inputs: Inputs,
    labels: torch.Tensor,
    *,
    epsilon: float = 1.0,
    points: int = 9,
    features: list[str] | None = None,
    grid: tuple[str, str] | list[str] | None = None,
    quantity: str = "loss",
    signal_class: int = 1,
    max_events: int | None = None,
    batch_size: int = 512,
    where: str = "loss_surface",
) -> LossSurface:
    """Mean loss (or discriminant) along each feature axis, and on an optional 2-D grid.

    ``inputs`` are the model's inputs (masks included) as CPU tensors, ``labels`` the class
    indices; ``features`` restricts the axes (default: every movable feature); ``grid`` names
    two features for the 2-D surface; ``max_events`` takes the first events only. ``where``
    names the caller's field in error messages.
    """
    if quantity not in QUANTITIES:
        raise SpecError(
            f"quantity {quantity!r} is not one of {QUANTITIES}", field=f"{where}.quantity"
        )
    if points < 2 or not epsilon > 0:
        raise SpecError(
            f"needs points >= 2 and epsilon > 0, got points={points}, epsilon={epsilon}",
            field=where,
        )
    all_axes = movable_axes(envelope)
    if not all_axes:
        raise SpecError(
            "no continuously movable feature: every feature is frozen, integer or categorical",
            field=where,
            fix="give at least one feature an `absolute` or `relative` sigma",
        )
    axes = (
        [find_axis(all_axes, envelope, f, f"{where}.features") for f in features]
        if features
        else all_axes
    )
    pair = None
    if grid is not None:
        if len(grid) != 2 or grid[0] == grid[1]:
            raise SpecError(
                f"grid needs two different features, got {list(grid)}",
                field=f"{where}.grid",
                fix='grid = ["feature_a", "feature_b"]',
            )
        pair = tuple(find_axis(all_axes, envelope, f, f"{where}.grid") for f in grid)
    n = len(labels) if max_events is None else min(len(labels), max_events)
    if n == 0:
        raise SpecError("no events to average over", field=where)
    decision = Decision(signal_class)
    offsets = torch.from_numpy(np.linspace(-epsilon, epsilon, points))
    sums = torch.zeros(len(axes), points, dtype=torch.float64)
    grid_sum = torch.zeros(points, points, dtype=torch.float64) if pair else None
    nominal_sum = torch.zeros((), dtype=torch.float64)
    events_per_chunk = max(1, batch_size // points)
    for start in range(0, n, events_per_chunk):
        part = slice(start, min(start + events_per_chunk, n))
        chunk = {name: x[part] for name, x in inputs.items()}
        target = labels[part]
        size = len(target)
        nominal_sum += _per_event(
            evaluate(tagger, chunk, batch_size), target, quantity, decision
        ).sum()
        for k, axis in enumerate(axes):
            moved = _shifted(envelope, chunk, [(axis, offsets)])
            values = _per_event(
                evaluate(tagger, moved, batch_size), target.repeat(points), quantity, decision
            )
            sums[k] += values.view(points, size).sum(dim=1)
        if pair is not None and grid_sum is not None:
            first = offsets.repeat_interleave(points)
            second = offsets.repeat(points)
            moved = _shifted(envelope, chunk, [(pair[0], first), (pair[1], second)])
            values = _per_event(
                evaluate(tagger, moved, batch_size),
                target.repeat(points * points),
                quantity,
                decision,
            )
            grid_sum += values.view(points, points, size).sum(dim=2)
    return LossSurface(
        quantity=quantity,
        epsilon=float(epsilon),
        offsets=offsets.numpy(),
        features=[a.name for a in axes],
        profiles=(sums / n).numpy(),
        nominal=float(nominal_sum / n),
        n_events=n,
        grid_features=(pair[0].name, pair[1].name) if pair else None,
        grid=None if grid_sum is None else (grid_sum / n).numpy(),
        source=getattr(tagger, "source", ""),
    )


def loss_surface_of_run(run: SpecRun, sample: str = "nominal", **kwargs: object) -> LossSurface:
    """``loss_surface`` on a spec's tagger, envelope and sample (default: nominal)."""
    inputs, labels = run.inputs(sample)
    kwargs.setdefault("signal_class", run.spec.model.signal_class)
    surface = loss_surface(run.tagger, run.envelope, inputs, labels, **kwargs)  # type: ignore[arg-type]
    surface.source = str(run.spec.path)
    return surface


def compare_loss_surfaces(
    first: SpecRun | str | Path, second: SpecRun | str | Path, **kwargs: object
) -> tuple[LossSurface, LossSurface]:
    """Two taggers' loss surfaces with the same settings, side by side.

    Each argument is a SpecRun or a spec path; each tagger is measured on its own spec's
    nominal sample. The features they share line up by name (``LossSurface.profile``).
    """
    from robustcheck.core import SpecRun

    runs = [r if isinstance(r, SpecRun) else SpecRun.from_path(r) for r in (first, second)]
    return loss_surface_of_run(runs[0], **kwargs), loss_surface_of_run(runs[1], **kwargs)
