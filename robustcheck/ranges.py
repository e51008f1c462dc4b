"""The work on one range of events, as pure functions shared by the in-process run and Dask.

A range is events ``[start, start + count)`` of a sample. :func:`sample_range` reads and
evaluates a range of a streamed sample; :func:`attack_range` attacks one. Each returns a small
result object: the per-event figures of the range, the kept events' inputs and the sums that
the client merges in order (:func:`merge_sample`, the ``adversaries`` loop of
:class:`robustcheck.core.SpecRun`). A worker runs them on a cached SpecRun of its own; the
in-process run on its own SpecRun, so single-process and Dask runs share this code.

Range boundaries are multiples of the sample's ``chunk_size`` (streamed samples) or of the
attack's ``batch_size`` (whole-file samples), so an attack whose penalty couples the events of
a block of ``batch_size`` events of the sample (constrained_pgd) sees the blocks of one process
and gives the same figures. The one input that shapes a
range's random numbers is where it starts: every event draws from its own streams, keyed by
its position in the sample (robustcheck.event_random), so any split gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from robustcheck.data import Dataset, Truncated
from robustcheck.decision import Decision
from robustcheck.engine import evaluate, run_attack
from robustcheck.envelope import Inputs
from robustcheck.sanity import merge_bounds
from robustcheck.stream import Chunk, Reservoir, ShiftSums, pick_kept

if TYPE_CHECKING:
    import contextlib

    from robustcheck.attacks.base import Attack
    from robustcheck.envelope import Envelope
    from robustcheck.padding import PaddingTrim
    from robustcheck.taggers.base import Tagger

Bounds = dict[tuple[str, str], tuple[int, float]]

# positions are offered to the reservoir this many at a time when only the count is known
POSITION_STEP = 1 << 20


class RangeRun(Protocol):
    """What the range functions use of a spec's run (robustcheck.core.SpecRun)."""

    @property
    def tagger(self) -> Tagger: ...
    @property
    def envelope(self) -> Envelope: ...
    @property
    def _eval_batch(self) -> int: ...
    def _chunk(self, start: int, dataset: Dataset, check: bool = False) -> Chunk: ...
    def _bounds(self, chunk: Chunk, name: str) -> Bounds: ...
    def _evaluate(self, chunk: Chunk, name: str) -> torch.Tensor: ...
    def _padding_trim(self, inputs: Inputs, sample: str) -> PaddingTrim | None: ...
    def _model_errors(self, inputs: Inputs) -> contextlib.AbstractContextManager[None]: ...


class Ranges(Protocol):
    """Where a spec's ranges run when not in its own process (robustcheck.distributed's
    DaskRanges): a streamed sample read range by range, and an attack's ranges in order."""

    def read_sample(self, run: Any, name: str) -> tuple[MergedSample, np.ndarray]: ...

    def attack(
        self,
        run: Any,
        job: tuple[str, float | None, str | None],
        decision: Decision,
        select: torch.Tensor,
        correct: torch.Tensor,
        batch_size: int,
        full: bool,
        kept: np.ndarray | None,
    ) -> Iterator[AttackRange]: ...


@dataclass
class SampleRange:
    """A range of a streamed sample: per-event figures and the kept events' inputs."""

    start: int
    labels: torch.Tensor
    weights: np.ndarray | None
    log_probs: torch.Tensor
    bounds: Bounds
    kept_inputs: Inputs
    kept_labels: torch.Tensor
    truncated: Truncated | None = None


@dataclass
class AttackRange:
    """An attack on a range: what the client merges into :class:`Adversaries`."""

    start: int
    count: int
    log_probs: torch.Tensor  # the adversarial events' class log-probabilities
    fooled: torch.Tensor
    per_event: dict[str, torch.Tensor]
    shift_sums: dict[str, torch.Tensor]
    shift_counts: dict[str, float]
    adversarial: Inputs  # the kept events' adversarial inputs (all events when all are kept)
    seconds: float
    tally: dict[str, list[float]] = field(default_factory=dict)  # Attack.tally of a worker

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.count)


def kept_positions(capacity: int, n_events: int) -> np.ndarray:
    """Positions of the events a streamed sample keeps (``keep_events``), from the event
    count alone: which events the reservoir keeps depends on its seed and the count only, so
    a client that knows the count tells each range which of its events to send back."""
    reservoir = Reservoir(capacity)
    for start in range(0, n_events, POSITION_STEP):
        n = min(POSITION_STEP, n_events - start)
        nothing = {"position": torch.empty((n, 0))}
        reservoir.offer(Chunk(start, nothing, torch.zeros(n, dtype=torch.int64)))
    return reservoir.sample()[0]


def merge_kept(parts: list[Inputs]) -> Inputs:
    """The kept events of consecutive ranges, in file order (each part in its range's order).

    The one place where kept samples are merged: a mergeable reservoir (bottom-k by a
    per-event key) would merge here instead of concatenating.
    """
    if len(parts) == 1:
        return parts[0]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def sample_range(
    run: RangeRun, name: str, start: int, dataset: Dataset, kept: np.ndarray
) -> SampleRange:
    """Validate and evaluate a range of a streamed sample read from its file; keep the events
    at the global positions ``kept`` (sorted; those outside the range are ignored)."""
    chunk = run._chunk(start, dataset, check=True)
    bounds = run._bounds(chunk, name)
    log_probs = run._evaluate(chunk, name)
    picked = pick_kept(chunk, kept, {**chunk.inputs, "_labels": chunk.labels})
    labels = picked.pop("_labels")
    return SampleRange(start, chunk.labels, dataset.weights, log_probs, bounds, picked, labels)


@dataclass
class MergedSample:
    labels: torch.Tensor
    weights: np.ndarray | None
    log_probs: torch.Tensor
    bounds: Bounds
    inputs: Inputs
    kept_labels: torch.Tensor
    truncated: Truncated | None


def merge_sample(parts: list[SampleRange]) -> MergedSample:
    """The ranges of a streamed sample, merged in file order."""
    parts = sorted(parts, key=lambda part: part.start)
    bounds: Bounds = {}
    truncated: Truncated | None = None
    for part in parts:
        merge_bounds(bounds, part.bounds)
        if part.truncated is not None:
            truncated = part.truncated if truncated is None else truncated.add(part.truncated)
    weights = None if parts[0].weights is None else np.concatenate([p.weights for p in parts])
    return MergedSample(
        torch.cat([p.labels for p in parts]),
        weights,
        torch.cat([p.log_probs for p in parts]),
        bounds,
        merge_kept([p.kept_inputs for p in parts]),
        torch.cat([p.kept_labels for p in parts]),
        truncated,
    )


def attack_range(
    run: RangeRun,
    attack: Attack,
    chunk: Chunk,
    decision: Decision,
    select: torch.Tensor,
    correct: torch.Tensor,
    batch_size: int,
    *,
    full: bool,
    kept: np.ndarray | None,
    progress: Callable[[int], None] | None = None,
) -> AttackRange:
    """Attack the ``select``-ed events of a range (``correct``: their nominal decision is
    right), evaluate the adversarial events and sum what the client needs.

    Its events draw from their own random streams (keyed by their positions: the chunk starts
    at ``chunk.start``); ``kept`` holds the global positions of the events kept in memory
    (None: all); ``progress`` is called with the events of each finished batch.
    """
    trim = run._padding_trim(chunk.inputs, "nominal")
    with run._model_errors(chunk.inputs):
        outcome = run_attack(
            attack,
            run.tagger,
            run.envelope,
            chunk.inputs,
            chunk.labels,
            decision,
            select,
            batch_size,
            early_stop=not full,
            first_event=chunk.start,
            trim=trim,
            progress=progress,
        )
        adv_inputs = {**chunk.inputs, **outcome.adversarial}
        log_probs = evaluate(run.tagger, adv_inputs, run._eval_batch, trim, first_event=chunk.start)
    fooled = correct & (decision.decide(log_probs) != decision.target(chunk.labels))
    shifts = ShiftSums(run.envelope)
    shifts.add(chunk.inputs, outcome.adversarial, fooled)
    return AttackRange(
        start=chunk.start,
        count=len(chunk),
        log_probs=log_probs,
        fooled=fooled,
        per_event=outcome.per_event,
        shift_sums=shifts.sums,
        shift_counts=shifts.counts,
        adversarial=adv_inputs if kept is None else pick_kept(chunk, kept, adv_inputs),
        seconds=outcome.seconds,
    )


def add_shifts(total: ShiftSums, part: AttackRange) -> None:
    """Add a range's sums of |shift| over fooled events (in range order, as one process)."""
    for name, sums in part.shift_sums.items():
        total.sums[name] += sums
        total.counts[name] += part.shift_counts[name]


def event_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive ranges of ``size`` events (the last shorter) of a
    sample of ``n``: with ``size`` a multiple of an attack's ``batch_size``, an attack that
    couples the events of a block (robustcheck.engine.blocks) sees the blocks of one process."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]
