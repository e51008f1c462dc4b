"""The uncertainty envelope: per-feature sigma, bounds, frozen entries and padding masks.

An attack of radius epsilon may move each entry within ``epsilon * sigma`` of its nominal
value, intersected with the feature's physical bounds. Frozen and integer features, entries
equal to a feature's ``default`` placeholder and padded entries (mask == 0) never move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from robustcheck.errors import DataError
from robustcheck.spec import FeatureEnvelope, Spec

Inputs = dict[str, torch.Tensor]


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

    @classmethod
    def from_features(
        cls, name: str, entries: Mapping[str, FeatureEnvelope], mask: str | None = None
    ) -> InputEnvelope:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        items = list(entries.values())
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
        )

    def to(self, device: torch.device | str) -> InputEnvelope:
        moved = {
            k: getattr(self, k).to(device)
            for k in ("absolute", "relative", "lower", "upper", "movable", "default")
        }
        return InputEnvelope(self.name, self.features, mask=self.mask, **moved)

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        """Sigma of every entry: absolute and relative parts added in quadrature."""
        return torch.hypot(self.absolute.expand_as(x), self.relative * x.abs())

    def movable_entries(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Entries an attack may change: movable features, not placeholders, not padding."""
        movable = self.movable.expand_as(x) & (x != self.default)
        if mask is not None:
            movable = movable & (mask != 0).unsqueeze(-1)
        return movable


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

    def project_(self, adv: Inputs) -> None:
        """Clamp adversarial inputs into the box, in place."""
        for name, x in adv.items():
            torch.clamp(x, self.lower[name], self.upper[name], out=x)


class Envelope:
    """The envelope of every perturbed model input."""

    def __init__(self, inputs: Mapping[str, InputEnvelope]) -> None:
        self.inputs = dict(inputs)

    @classmethod
    def from_spec(cls, spec: Spec) -> Envelope:
        return cls(
            {
                name: InputEnvelope.from_features(name, spec.envelope[name], spec.inputs[name].mask)
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
            step = env.sigma(x) * env.movable_entries(x, mask)
            radius = epsilon * step
            lower[name] = torch.minimum(torch.maximum(x - radius, env.lower), x)
            upper[name] = torch.maximum(torch.minimum(x + radius, env.upper), x)
            unit[name] = step
        return Box(lower, upper, unit, real)

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
