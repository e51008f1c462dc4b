"""The validated spec as typed, frozen dataclasses (what the parser returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcheck.spec.fields import KEEP_EVENTS


@dataclass(frozen=True)
class ModelSpec:
    path: str
    weights: str | None
    output: str | int
    scores: str
    signal_class: int
    device: str
    input_names: tuple[str, ...] | None
    min_auc: float | None = None
    min_accuracy: float | None = None
    skip_gates: tuple[str, ...] = ()
    compile: bool = False


@dataclass(frozen=True)
class MaskOf:
    """A model input computed as the padding mask (1.0 real, 0.0 padding) of a jagged input."""

    input: str


@dataclass(frozen=True)
class DataSpec:
    """One [data.NAME] table.

    ``inputs`` holds every model input, mask inputs included: a string names one array, a
    tuple names arrays stacked along a new last axis, a ``MaskOf`` is the padding mask of
    another (jagged) model input.
    """

    name: str
    path: Path
    labels: str
    inputs: dict[str, str | tuple[str, ...] | MaskOf]
    max_events: int | None
    tree: str | None
    pad: int | None = None
    truncate: str = "warn"
    weights: str | None = None
    chunk_size: int | None = None
    keep_events: int = KEEP_EVENTS
    strict_bounds: bool = False

    @property
    def masks(self) -> dict[str, str]:
        """Mask model input -> the jagged model input it masks."""
        return {k: v.input for k, v in self.inputs.items() if isinstance(v, MaskOf)}

    def keys(self) -> list[str]:
        """The arrays to read from the file (labels first), each once."""
        keys = [self.labels] + ([self.weights] if self.weights else [])
        for source in self.inputs.values():
            if isinstance(source, str):
                keys.append(source)
            elif isinstance(source, tuple):
                keys.extend(source)
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class InputSpec:
    name: str
    features: tuple[str, ...]
    mask: str | None
    perturb: bool
    trim_padding: bool = False


@dataclass(frozen=True)
class FeatureEnvelope:
    absolute: float | None
    relative: float | None
    min: float | None
    max: float | None
    frozen: bool
    integer: bool
    default: float | None
    choices: tuple[float, ...] | None = None
    unit: str | None = None  # shown on plot axes and in messages that quote values

    @property
    def has_sigma(self) -> bool:
        return self.absolute is not None or self.relative is not None

    @property
    def categorical(self) -> bool:
        """Declared with ``choices``: swaps among the listed values."""
        return self.choices is not None

    @property
    def discrete(self) -> bool:
        """Moves in whole units or among listed values, never continuously."""
        return self.integer or self.categorical

    @property
    def needs_sigma(self) -> bool:
        """Movable by sigma (not frozen, not categorical, not an integer without sigma) but
        without one: an error in a spec."""
        return self.movable and not self.categorical and not self.has_sigma

    @property
    def movable(self) -> bool:
        """Whether an attack may move it: not frozen, and an integer feature only with a
        sigma (whole units), a categorical one among its ``choices``."""
        if self.frozen:
            return False
        if self.categorical:
            return True
        return not self.integer or self.has_sigma


@dataclass(frozen=True)
class EnvelopeGroup:
    """One entry of ``[envelope.NAME] groups``: a coherent shift or a correlated envelope.

    A coherent group moves its features of every constituent by one shared variable ``s`` per
    event: ``x -> x * (1 + relative * s) + absolute * s``. A correlated group replaces the box
    of its features by the Mahalanobis ball of ``covariance`` (always in the features' units;
    a ``correlation`` is turned into one with the features' absolute sigmas).
    """

    input: str
    name: str
    features: tuple[str, ...]
    coherent: bool
    relative: float | None = None
    absolute: float | None = None
    covariance: tuple[tuple[float, ...], ...] | None = None

    @property
    def correlated(self) -> bool:
        return self.covariance is not None


@dataclass(frozen=True)
class AttackSpec:
    name: str
    method: str
    options: dict[str, Any]

    @property
    def epsilon(self) -> float:
        return float(self.options["epsilon"])


@dataclass(frozen=True)
class CheckSpec:
    index: int
    name: str
    type: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Spec:
    """A validated robustness spec; relative paths are already resolved."""

    path: Path
    version: int
    model: ModelSpec
    data: dict[str, DataSpec]
    inputs: dict[str, InputSpec]
    envelope: dict[str, dict[str, FeatureEnvelope]]
    attacks: dict[str, AttackSpec]
    checks: tuple[CheckSpec, ...]
    groups: dict[str, tuple[EnvelopeGroup, ...]] = field(default_factory=dict)
    baseline: Path | None = None
    observables: str | None = None  # [observables] function, "file.py:func" or "pkg.mod:func"

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def model_path(self) -> Path | None:
        """The model file, or None when the model is an import path."""
        return None if is_import_path(self.model.path) else self.base_dir / self.model.path

    def perturbed_inputs(self) -> list[str]:
        return [name for name, spec in self.inputs.items() if spec.perturb]


def is_import_path(path: str) -> bool:
    """True for ``pkg.module:factory`` model paths (dotted identifiers on both sides)."""
    module, colon, attr = path.partition(":")
    return bool(colon) and all(
        part.isidentifier() for part in [*module.split("."), *attr.split(".")]
    )
