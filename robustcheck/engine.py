"""The batched engine: moves events to the device, evaluates taggers and runs attacks."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.data import Dataset
from robustcheck.decision import Decision
from robustcheck.envelope import Envelope, Inputs
from robustcheck.event_random import EventRandom
from robustcheck.padding import TRIM_WINDOW, PaddingTrim, paste
from robustcheck.taggers.base import Tagger


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_tensors(dataset: Dataset, perturbed: list[str]) -> Inputs:
    """CPU tensors of a dataset's inputs; perturbed inputs become float32."""
    out = {}
    for name, array in dataset.inputs.items():
        if name in perturbed or array.dtype == np.float64:
            array = array.astype(np.float32, copy=False)
        out[name] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def take(inputs: Inputs, index: slice | torch.Tensor, device: torch.device) -> Inputs:
    return {name: x[index].to(device, non_blocking=True) for name, x in inputs.items()}


def evaluate(
    tagger: Tagger,
    inputs: Inputs,
    batch_size: int,
    trim: PaddingTrim | None = None,
    progress: Callable[[int], None] | None = None,
    first_event: int = 0,
) -> torch.Tensor:
    """Class log-probabilities of every event, on the CPU.

    With ``trim``, events go through in order of multiplicity (within each window of
    TRIM_WINDOW events of the sample; ``first_event`` is the position of ``inputs``' first
    event), each batch cut to its longest. ``progress`` is called with the number of events of
    each batch once it is evaluated.
    """
    n = len(next(iter(inputs.values())))
    if trim is None:
        parts: list[slice | torch.Tensor] = list(batches(n, batch_size))
    else:
        parts = trimmed_batches(trim, inputs, torch.arange(n), first_event, batch_size)
    out: torch.Tensor | None = None
    with tagger.frozen():
        for rows in parts:
            batch = take(inputs, rows, tagger.device)
            log_probs = tagger.evaluate(batch if trim is None else trim.cut(batch)).cpu()
            if out is None:
                out = torch.empty(n, log_probs.shape[1], dtype=log_probs.dtype)
            # written into one tensor: small per-batch tensors kept alive between the batches'
            # large freed activations fragment glibc's heap (the process grew by 8 kB per
            # DeepSets event in batches of 256; benchmarks/streaming_memory.py)
            out[rows] = log_probs
            del log_probs
            if progress is not None:
                progress(rows.stop - rows.start if isinstance(rows, slice) else len(rows))
    return out if out is not None else torch.empty(0, 2)


def trimmed_batches(
    trim: PaddingTrim, inputs: Inputs, index: torch.Tensor, first_event: int, batch_size: int
) -> list[torch.Tensor]:
    """Batches of the events of ``index`` (positions in a chunk that starts at
    ``first_event``) in order of multiplicity within each window of TRIM_WINDOW events of the
    sample, never mixing two windows: the batches depend on the batch size, not on how the
    sample is cut into ranges of whole windows."""
    out = []
    for window in blocks(index, first_event, TRIM_WINDOW):
        ordered = trim.order(inputs, window)
        out += [ordered[part] for part in batches(len(ordered), batch_size)]
    return out


@dataclass
class AttackOutcome:
    """Adversarial inputs for every event (nominal values where not attacked), and the
    per-event figures the attack recorded (``AttackBatch.record``; NaN where not attacked)."""

    adversarial: Inputs
    seconds: float
    per_event: dict[str, torch.Tensor] = field(default_factory=dict)


def run_attack(
    attack: Attack,
    tagger: Tagger,
    envelope: Envelope,
    inputs: Inputs,
    labels: torch.Tensor,
    decision: Decision,
    select: torch.Tensor,
    batch_size: int,
    early_stop: bool = True,
    first_event: int = 0,
    trim: PaddingTrim | None = None,
    progress: Callable[[int], None] | None = None,
) -> AttackOutcome:
    """Attack the events in ``select``; the others keep their nominal values.

    With ``early_stop`` an event stops moving once its decision flips. Every event draws its
    random numbers from its own stream, keyed by the attack's seed and method and the event's
    position in the sample (``first_event`` is that of ``inputs``' first event: a chunk's
    start), so the outcome does not depend on the batch size, the chunking, a split after
    running out of memory or the device (robustcheck.event_random). An attack whose steps
    couple the events of a batch (``Attack.couples_events``: constrained_pgd's distribution
    penalty) runs on fixed blocks of ``batch_size`` consecutive events of the sample instead,
    so its outcome depends on the batch size but on nothing else. With ``trim``, batches take
    the events in order of multiplicity (within a block, else within a window of TRIM_WINDOW
    events: :func:`trimmed_batches`) and lose the slots that are padding in all their events
    (the adversarial padding stays nominal).
    ``progress`` is called with the number of events of each batch once its results are in.
    """
    device = tagger.device
    env = envelope.to(device)
    index = torch.nonzero(select).flatten()
    if attack.couples_events:
        parts = [
            part if trim is None else trim.order(inputs, part)
            for part in blocks(index, first_event, batch_size)
        ]
    elif trim is None:
        parts = [index[part] for part in batches(len(index), batch_size)]
    else:
        parts = trimmed_batches(trim, inputs, index, first_event, batch_size)
    adversarial = {name: inputs[name].clone() for name in envelope.inputs}
    features = {name: spec.features for name, spec in envelope.inputs.items()}
    per_event: dict[str, torch.Tensor] = {}
    started = time.perf_counter()

    def attack_rows(rows: torch.Tensor, widths: Mapping[str, int] | None = None) -> None:
        nominal = take(inputs, rows, device)
        if trim is not None:
            nominal = trim.cut(nominal, widths)
        events = (rows + first_event).to(device, non_blocking=True)
        batch = AttackBatch(
            tagger=tagger,
            nominal=nominal,
            target=decision.target(labels[rows].to(device)),
            box=env.box(nominal, attack.epsilon),
            decision=decision,
            random=EventRandom.of(attack.seed, attack.stream_label, events),
            early_stop=early_stop,
            features=features,
        )
        for name, x in attack.perturb(batch).items():
            paste(adversarial[name], rows, x.to("cpu"))
        for name, values in batch.outputs.items():
            if name not in per_event:
                shape = (len(labels), *values.shape[1:])
                per_event[name] = torch.full(shape, math.nan, dtype=torch.float64)
            per_event[name][rows] = values.to("cpu", torch.float64)

    with tagger.frozen():
        for rows in parts:
            if attack.couples_events:
                attack_block(attack_rows, rows, batch_size)
            elif trim is None:
                split_on_oom(attack_rows, rows)
            else:  # halves after an out-of-memory split keep the whole batch's width
                widths = trim.widths({mask: inputs[mask][rows] for mask in trim.groups})
                split_on_oom(lambda part, widths=widths: attack_rows(part, widths), rows)
            if progress is not None:
                progress(len(rows))
    return AttackOutcome(adversarial, time.perf_counter() - started, per_event)


def blocks(index: torch.Tensor, first_event: int, size: int) -> Iterator[torch.Tensor]:
    """The events of ``index`` (sorted positions in a chunk starting at ``first_event``)
    grouped by their block of ``size`` consecutive events of the whole sample."""
    if not len(index):
        return
    block = torch.div(index + first_event, size, rounding_mode="floor")
    starts = torch.nonzero(torch.diff(block, prepend=block[:1] - 1)).flatten().tolist()
    for start, stop in zip(starts, [*starts[1:], len(index)], strict=True):
        yield index[start:stop]


def attack_block(run: Callable[[torch.Tensor], None], rows: torch.Tensor, size: int) -> None:
    """``run(rows)`` for an attack that couples the events of a batch: out of memory, it
    cannot be split without changing the outcome, so it fails naming the fix."""
    try:
        run(rows)
        return
    except torch.cuda.OutOfMemoryError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise torch.cuda.OutOfMemoryError(
        f"CUDA out of memory on a block of {len(rows)} events (batch_size {size}); the "
        "attack's penalty couples the events of a block, so it cannot be split: set a smaller "
        "batch_size on the attack"
    )


# events per block of an attack that couples the events of a batch, on every device, so that
# its figures do not depend on where it runs
COUPLED_BATCH = 4096


def default_batch_size(device: torch.device) -> int:
    """Events per batch when the spec gives none: CUDA starts large and halves on OOM."""
    return 65536 if device.type == "cuda" else 4096


# Padded particle inputs on CPU: attention and kNN taggers (benchmarks/architectures.py) cost
# 1.3-2.9 times more per event in batches of 2,048 than of 128 (their (particles x particles)
# tensors leave the cache), and with trim_padding small batches track each jet's length.
PARTICLE_BATCH_CPU = 256


def default_particle_batch_size(device: torch.device) -> int:
    """Events per batch for a spec with padded particle inputs (a mask) when it gives none."""
    return PARTICLE_BATCH_CPU if device.type == "cpu" else default_batch_size(device)


def split_on_oom(run: Callable[[torch.Tensor], None], rows: torch.Tensor) -> None:
    """``run(rows)``; on CUDA out-of-memory, free the cache and run each half instead.

    Every event keeps its own random stream, so a split changes nothing but the time.
    """
    try:
        run(rows)
        return
    except torch.cuda.OutOfMemoryError:
        if len(rows) <= 1:
            raise
    # outside the except block: its traceback would keep the failed batch's tensors alive
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    warnings.warn(  # one text, so Python shows it once however often batches split
        "CUDA out of memory: batches are retried in halves (set a smaller batch_size on "
        "the attack to avoid the retries)",
        RuntimeWarning,
        stacklevel=2,
    )
    middle = len(rows) // 2
    split_on_oom(run, rows[:middle])
    split_on_oom(run, rows[middle:])
