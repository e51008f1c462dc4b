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
from robustcheck.event_random import EventRandom

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
    """A uniform random sample of at most ``capacity`` events of a stream (bottom-k).

    Every event gets a random key from its own stream (``seed`` and its position in the
    sample, robustcheck.event_random), and the sample holds the ``capacity`` events with the
    smallest keys. Which events are kept depends on ``seed`` and the events only: not on the
    chunking, nor on the order chunks come in, and two reservoirs of parts of a sample merge
    into the reservoir of the whole (:meth:`merge`), as a cluster's workers need.
    """

    def __init__(self, capacity: int, seed: int = KEEP_SEED) -> None:
        self.capacity = capacity
        self.seed = seed
        self.index = np.zeros(0, dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)
        self.inputs: Inputs = {}
        self.labels = torch.empty(0, dtype=torch.int64)

    def event_keys(self, events: np.ndarray) -> np.ndarray:
        """The random key of each event (by its position in the sample)."""
        streams = EventRandom.of(self.seed, "keep_events", torch.from_numpy(events))
        return (streams.uniform((len(events),), torch.float64) * 2**24).long().numpy()

    def offer(self, chunk: Chunk) -> None:
        """Consider every event of a chunk."""
        events = np.arange(chunk.start, chunk.start + len(chunk), dtype=np.int64)
        self._keep(events, self.event_keys(events), chunk.inputs, chunk.labels)

    def merge(self, other: Reservoir) -> None:
        """Take in the sample of another part of the stream (same seed and capacity)."""
        if (other.seed, other.capacity) != (self.seed, self.capacity):
            raise ValueError("reservoirs of different seeds or capacities do not merge")
        if len(other.index):
            self._keep(other.index, other.keys, other.inputs, other.labels)

    def _keep(
        self, events: np.ndarray, keys: np.ndarray, inputs: Inputs, labels: torch.Tensor
    ) -> None:
        ours = len(self.index)
        all_events = np.concatenate([self.index, events])
        all_keys = np.concatenate([self.keys, keys])
        # smallest keys first; ties (24-bit keys) broken by position, so the order is total
        chosen = np.lexsort((all_events, all_keys))[: self.capacity]
        mine, theirs = np.sort(chosen[chosen < ours]), np.sort(chosen[chosen >= ours]) - ours
        kept = np.concatenate([self.index[mine], events[theirs]])
        order = torch.from_numpy(np.argsort(kept, kind="stable"))  # in file order
        first, second = torch.from_numpy(mine), torch.from_numpy(theirs)
        if not self.inputs:
            self.inputs = {name: x[:0] for name, x in inputs.items()}
            self.labels = labels[:0]
        self.inputs = {
            name: torch.cat([self.inputs[name][first], x[second]])[order]
            for name, x in inputs.items()
        }
        self.labels = torch.cat([self.labels[first], labels[second]])[order]
        self.index = kept[order.numpy()]
        self.keys = np.concatenate([self.keys[mine], keys[theirs]])[order.numpy()]

    def sample(self) -> tuple[np.ndarray, Inputs, torch.Tensor]:
        """The kept events in file order: their positions, inputs and labels."""
        return self.index, self.inputs, self.labels


def pick_kept(chunk: Chunk, kept: np.ndarray, inputs: Inputs) -> Inputs:
    """The rows of ``inputs`` (a chunk's) that are among the ``kept`` events (sorted)."""
    low, high = np.searchsorted(kept, [chunk.start, chunk.start + len(chunk)])
    local = torch.from_numpy(kept[low:high] - chunk.start)
    return {name: x[local] for name, x in inputs.items()}


SHIFT_BLOCK = 8192  # fooled events whose shifts are summed at a time


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
        """Add the shifts of a chunk's fooled events, SHIFT_BLOCK events at a time (the
        pulls of all of them at once took several copies of the inputs' size)."""
        rows = torch.nonzero(fooled).flatten()
        for start in range(0, len(rows), SHIFT_BLOCK):
            block = rows[start : start + SHIFT_BLOCK]
            for name, env in self.envelope.inputs.items():
                x0 = nominal[name][block]
                pulls = env.shift_in_sigma(x0, adversarial[name][block])  # a swap counts 1
                if env.mask is not None:
                    real = (nominal[env.mask][block] != 0).reshape(-1, 1)
                else:
                    real = torch.ones(x0.shape[:-1], dtype=torch.bool).reshape(-1, 1)
                real = real.to(torch.float64)
                flat = pulls.reshape(-1, len(env.features)).double()
                self.sums[name] += (flat * real).sum(0)
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
