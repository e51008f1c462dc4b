"""Hypothesis strategies that draw perturbations inside an uncertainty envelope.

A draw is a *pull* in [-1, 1] for every entry a perturbation may move: -1 is the lower edge
of the entry's box (epsilon sigma below nominal, or the feature's `min`), +1 its upper edge,
0 the nominal value. Every draw therefore stays in the envelope, and hypothesis, which
shrinks each pull towards 0, shrinks a failing example towards "no change": a counterexample
keeps only the entries it needs. Frozen features, integer features without a sigma, `default`
placeholders and padded particle entries never move. An integer feature with a sigma moves to
the whole unit nearest the pull's point, a categorical feature (`choices`) to the listed value
nearest it, so every draw is integral where the data are, and shrinking still drops every
entry a counterexample does not need.

Use them in your own tests::

    from hypothesis import given
    from robustcheck.strategies import from_spec

    sample = from_spec("robustness.toml", epsilon=1.0, max_events=32)

    @given(sample.perturbations())
    def test_score_is_stable(perturbed):
        change = my_score(perturbed["x"]) - my_score(sample.nominal["x"])
        assert abs(change).max() < 0.05

This is the only robustcheck module that imports hypothesis.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import DeadlineExceeded, NoSuchExample
from hypothesis.extra.numpy import arrays

from robustcheck.envelope import Box, Envelope, Inputs
from robustcheck.errors import DataError, SpecError

T = TypeVar("T")
Array = Any  # a numpy array or a torch tensor

__all__ = [
    "EnvelopeSample",
    "SearchOutcome",
    "database_key",
    "from_spec",
    "group_shifts",
    "perturb",
    "perturbations",
    "pulls",
    "search",
]


def pulls(
    envelope: Envelope, shapes: Mapping[str, Sequence[int]]
) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Float32 pulls in [-1, 1] for every perturbed input, shaped ``shapes[name]``.

    Only the features an attack may move are drawn; the others are always 0, so they never
    appear in a counterexample. Each pull shrinks towards 0.
    """
    parts = {}
    columns = {}
    for name, env in envelope.inputs.items():
        shape = tuple(int(n) for n in shapes[name])
        if not shape or shape[-1] != len(env.features):
            raise ValueError(
                f"shape {shape} of input `{name}` does not end in its {len(env.features)} features"
            )
        columns[name] = np.flatnonzero(env.movable.cpu().numpy())
        parts[name] = arrays(
            np.float32,
            (*shape[:-1], len(columns[name])),
            elements=st.floats(-1.0, 1.0, width=32),
            fill=st.nothing(),  # every entry drawn (and shrunk) on its own
        )

    def scatter(drawn: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, values in drawn.items():
            full = np.zeros((*values.shape[:-1], len(envelope.inputs[name].features)), np.float32)
            full[..., columns[name]] = values
            out[name] = full
        return out

    return st.fixed_dictionaries(parts).map(scatter)


def perturb(box: Box, nominal: Inputs, pulls: Mapping[str, Array]) -> Inputs:
    """The inputs that ``pulls`` select in ``box`` (pulls broadcast over leading axes).

    A pull of +1 reaches the box's upper edge, -1 its lower edge; the point is then projected
    into the attack's set (the Mahalanobis ball of a correlated group), integer entries rounded
    to the nearest whole unit and categorical ones to the nearest listed value (deterministic,
    so that a pull always gives the same point). Entries the box does not let move keep their
    nominal values bit for bit.
    """
    out = {}
    for name, pull in pulls.items():
        x = nominal[name]
        u = torch.as_tensor(pull, dtype=x.dtype, device=x.device)
        lower, upper = box.lower[name], box.upper[name]
        out[name] = x + torch.where(u >= 0, u * (upper - x), u * (x - lower))
    box.project_(out, stochastic=False)
    for name, moved in out.items():
        out[name] = torch.where(box.unit[name] > 0, moved, nominal[name])
    return out


def _as_tensors(nominal: Mapping[str, Array]) -> dict[str, torch.Tensor]:
    return {
        name: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        for name, value in nominal.items()
    }


def _nominal_box(
    envelope: Envelope, nominal: Mapping[str, Array], epsilon: float
) -> tuple[Envelope, dict[str, torch.Tensor], Box]:
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    for name, env in envelope.inputs.items():
        for needed, what in ((name, "a perturbed input"), (env.mask, f"the mask of `{name}`")):
            if needed is not None and needed not in nominal:
                raise DataError(
                    f"the nominal inputs have no `{needed}` ({what})",
                    field=f"inputs.{name}",
                    fix=f"pass every model input the envelope needs: {sorted(envelope.inputs)}",
                )
    tensors = _as_tensors(nominal)
    envelope.check_shapes({k: tuple(v.shape) for k, v in tensors.items()}, "nominal inputs")
    device = next(iter(tensors.values())).device
    envelope = envelope.to(device)
    return envelope, tensors, envelope.box(tensors, float(epsilon))


def perturbations(
    envelope: Envelope, nominal: Mapping[str, Array], epsilon: float, *, coherent: bool = False
) -> st.SearchStrategy[dict[str, Array]]:
    """Perturbed copies of ``nominal`` (events along the first axis) within ``epsilon`` sigma.

    Each draw is a dict with every input of ``nominal``: the perturbed ones moved inside their
    box, the others (masks, unperturbed inputs) as given, each of the type it was given in
    (numpy array or torch tensor). With ``coherent`` one pattern of pulls is drawn per event
    shape and applied to every event, each scaled to its own box (a coherent shift of the whole
    sample); otherwise every entry of every event is drawn on its own, so keep the sample
    small (tens of events).
    """
    envelope, tensors, box = _nominal_box(envelope, nominal, epsilon)
    shapes = {
        name: tuple(tensors[name].shape[1:] if coherent else tensors[name].shape)
        for name in envelope.inputs
    }

    def build(drawn: dict[str, np.ndarray]) -> dict[str, Array]:
        moved = perturb(box, tensors, drawn)
        out = dict(nominal)
        for name, value in moved.items():
            out[name] = value if isinstance(nominal[name], torch.Tensor) else value.numpy()
        return out

    return pulls(envelope, shapes).map(build)


def group_shifts(
    envelope: Envelope, nominal: Mapping[str, Array], epsilon: float, *, per_event: bool = False
) -> st.SearchStrategy[dict[str, Array]]:
    """Coherent systematic shifts: one variation ``s`` in [-epsilon, epsilon] per coherent
    envelope group (a jet energy scale, say), shared by every event, or drawn per event with
    ``per_event``. Each shift shrinks towards 0 (hypothesis prefers simple values such as
    1 sigma), so a counterexample keeps only the groups it needs, at a readable size.
    Features outside the groups never move.
    """
    envelope, tensors, box = _nominal_box(envelope, nominal, epsilon)
    names = box.coherent_groups()
    if not names:
        raise SpecError(
            "the envelope has no coherent groups to shift",
            field="envelope",
            fix='add groups = [{ features = ["pt"], coherent = true, relative = 0.02 }]',
        )
    n = len(next(iter(tensors.values())))
    shape = (n, len(names)) if per_event else (len(names),)
    bound = float(np.float32(epsilon))
    elements = st.floats(-bound, bound, allow_nan=False, width=32)

    def build(drawn: np.ndarray) -> dict[str, Array]:
        s = torch.as_tensor(drawn, dtype=torch.float32)
        s = s if per_event else s.expand(n, -1)
        out = dict(nominal)
        for name, value in box.shifted(s, names).items():
            out[name] = value if isinstance(nominal[name], torch.Tensor) else value.numpy()
        return out

    return arrays(np.float32, shape, elements=elements).map(build)


@dataclass(frozen=True)
class EnvelopeSample:
    """The first events of a spec's sample with its envelope, ready for ``@given`` tests."""

    envelope: Envelope
    nominal: dict[str, np.ndarray]
    labels: np.ndarray
    epsilon: float

    def perturbations(self, coherent: bool = False) -> st.SearchStrategy[dict[str, np.ndarray]]:
        """Perturbed copies of ``nominal`` within ``epsilon`` sigma (see ``perturbations``)."""
        return perturbations(self.envelope, self.nominal, self.epsilon, coherent=coherent)

    def shifts(self, per_event: bool = False) -> st.SearchStrategy[dict[str, np.ndarray]]:
        """Coherent shifts of the envelope's groups (see ``group_shifts``)."""
        return group_shifts(self.envelope, self.nominal, self.epsilon, per_event=per_event)


def from_spec(
    path: str | Path, epsilon: float, *, sample: str = "nominal", max_events: int | None = 32
) -> EnvelopeSample:
    """Load a spec's envelope and the first ``max_events`` events of one of its samples."""
    from robustcheck.core import SpecRun

    run = SpecRun.from_path(path)
    if sample not in run.spec.data:
        raise SpecError(
            f"no sample named {sample!r}",
            file=run.spec.path,
            field="data",
            fix=f"use one of: {', '.join(run.spec.data)}",
        )
    inputs, labels = run.inputs(sample)
    rows = slice(0, max_events)
    return EnvelopeSample(
        envelope=run.envelope,
        nominal={name: x[rows].numpy() for name, x in inputs.items()},
        labels=labels[rows].numpy(),
        epsilon=float(epsilon),
    )


@dataclass(frozen=True)
class SearchOutcome:
    """The minimal failing example hypothesis found (None when none), and how it searched."""

    example: Any
    settings: settings
    seed: int | None


def database_key(*parts: object) -> bytes:
    """A stable example-database key for a search described by ``parts``."""
    return hashlib.sha256(repr(("robustcheck", *parts)).encode()).digest()


def search(
    strategy: st.SearchStrategy[T],
    fails: Callable[[T], bool],
    *,
    seed: int | None,
    max_examples: int | None = None,
    key: bytes | None = None,
) -> SearchOutcome:
    """Search ``strategy`` for an example where ``fails`` is true, and shrink it.

    The active hypothesis profile supplies the settings (database, phases but ``explain``,
    verbosity, derandomize, deadline); ``max_examples`` overrides the profile's when given.
    hypothesis's stock 200 ms deadline is lifted, since an example may score a whole sample,
    but a deadline that the loaded profile sets is kept (TimeoutError when an example runs past
    it).
    With ``seed`` None, hypothesis seeds the search itself (random, or fixed under a
    ``derandomize`` profile or ``--hypothesis-seed``).
    """
    base = settings.default
    overrides: dict[str, Any] = {
        "suppress_health_check": list(HealthCheck),
        # the explain phase only annotates hypothesis's own failure report, which find() never
        # shows, and it costs as much as the search itself
        "phases": [phase for phase in base.phases if phase != Phase.explain],
    }
    if max_examples is not None:
        overrides["max_examples"] = int(max_examples)
    if base.deadline == settings.get_profile("default").deadline:
        overrides["deadline"] = None
    used = settings(base, **overrides)
    rng = random.Random(seed) if seed is not None else None
    try:
        example = find(strategy, fails, settings=used, random=rng, database_key=key)
    except NoSuchExample:
        example = None
    except DeadlineExceeded as exc:
        raise TimeoutError(
            f"an example ran past the hypothesis profile's deadline of {used.deadline}: {exc}"
        ) from None
    return SearchOutcome(example, used, seed)
