"""Samples as chunks of events, and the bounded random sample kept while streaming.

A sample without ``chunk_size`` is one chunk held in memory. With ``chunk_size`` its file is
read one chunk at a time, every time the events are needed (the nominal evaluation, then each
attack), and only per-event figures (labels, weights, class probabilities, decisions) and a
seeded uniform random sample of ``keep_events`` events stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustcheck.envelope import Envelope, Inputs

# the random sample kept while streaming is drawn with this fixed seed (reported with it)
KEEP_SEED = 0


@dataclass
class Chunk:
    """Consecutive events of a sample, from event ``start`` on, as CPU tensors."""

    start: int
    inputs: Inputs
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def rows(self) -> slice:
        """Where these events lie in the whole sample."""
        return slice(self.start, self.start + len(self.labels))


class Reservoir:
    """A uniform random sample of at most ``capacity`` events of a stream (algorithm R).

    Which events are kept depends on ``seed`` and the event count only, not on the chunking.
    """

    def __init__(self, capacity: int, seed: int = KEEP_SEED) -> None:
        self.capacity = capacity
        self.generator = np.random.default_rng(seed)
        self.seen = 0
        self.index = np.full(capacity, -1, dtype=np.int64)
        self.inputs: Inputs = {}
        self.labels = torch.empty(0, dtype=torch.int64)

    def offer(self, chunk: Chunk) -> None:
        """Consider every event of the next chunk (chunks must come in order)."""
        n = len(chunk)
        events = np.arange(self.seen, self.seen + n)
        # event i takes slot j ~ U{0..i}: its own slot while the reservoir fills up
        slots = np.where(events < self.capacity, events, self.generator.integers(0, events + 1))
        taken = np.flatnonzero(slots < self.capacity)
        # where two events of this chunk take one slot, the later one wins, as in sequence
        last, first_of_reversed = np.unique(slots[taken][::-1], return_index=True)
        rows = taken[::-1][first_of_reversed]
        if not self.inputs:
            self.inputs = {
                name: torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
                for name, x in chunk.inputs.items()
            }
            self.labels = torch.zeros(self.capacity, dtype=chunk.labels.dtype)
        where, picked = torch.from_numpy(last), torch.from_numpy(rows)
        for name, x in chunk.inputs.items():
            self.inputs[name][where] = x[picked]
        self.labels[where] = chunk.labels[picked]
        self.index[last] = events[rows]
        self.seen += n

    def sample(self) -> tuple[np.ndarray, Inputs, torch.Tensor]:
        """The kept events in file order: their positions, inputs and labels."""
        filled = np.flatnonzero(self.index >= 0)
        order = filled[np.argsort(self.index[filled])]
        picked = torch.from_numpy(order)
        inputs = {name: x[picked] for name, x in self.inputs.items()}
        return self.index[order], inputs, self.labels[picked]


def pick_kept(chunk: Chunk, kept: np.ndarray, inputs: Inputs) -> Inputs:
    """The rows of ``inputs`` (a chunk's) that are among the ``kept`` events (sorted)."""
    low, high = np.searchsorted(kept, [chunk.start, chunk.start + len(chunk)])
    local = torch.from_numpy(kept[low:high] - chunk.start)
    return {name: x[local] for name, x in inputs.items()}


class ShiftSums:
    """Mean |shift| in sigma per feature over fooled events, summed chunk by chunk.

    Padded particle entries are left out. Features are named as in the spec, as
    ``input.feature`` where two inputs share a feature name.
    """

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.sums = {
            name: torch.zeros(len(env.features), dtype=torch.float64)
            for name, env in envelope.inputs.items()
        }
        self.counts = dict.fromkeys(envelope.inputs, 0.0)

    def add(self, nominal: Inputs, adversarial: Inputs, fooled: torch.Tensor) -> None:
        if not bool(fooled.any()):
            return
        for name, env in self.envelope.inputs.items():
            x0 = nominal[name][fooled]
            pulls = env.shift_in_sigma(x0, adversarial[name][fooled])  # a swap counts 1
            if env.mask is not None:
                real = (nominal[env.mask][fooled] != 0).reshape(-1, 1)
            else:
                real = torch.ones(x0.shape[:-1], dtype=torch.bool).reshape(-1, 1)
            real = real.to(torch.float64)
            self.sums[name] += (pulls.reshape(-1, len(env.features)).double() * real).sum(0)
            self.counts[name] += float(real.sum())

    def means(self) -> list[tuple[str, float]]:
        """(feature, mean |shift| in sigma), largest first; empty when nothing was fooled."""
        if not any(self.counts.values()):
            return []
        names = [f for env in self.envelope.inputs.values() for f in env.features]
        out = []
        for name, env in self.envelope.inputs.items():
            means = self.sums[name] / max(self.counts[name], 1.0)
            labels = [f if names.count(f) == 1 else f"{name}.{f}" for f in env.features]
            out += [(f, float(v)) for f, v in zip(labels, means, strict=True)]
        return sorted(out, key=lambda item: -item[1])
