"""Per-event random streams: the same numbers for an event however the sample is split.

Every random number an attack draws for an event is a hash of (seed, attack, event index,
draw, copy, position): a counter-based generator, so the numbers do not depend on which other
events share the batch, on the batch size, the chunk size, an out-of-memory split, the device
or the worker that runs the event. ``seed`` and the attack's method name give a 32-bit key;
the event index is the event's position in the whole sample; ``draw`` counts the draws of the
attack (each call of :meth:`EventRandom.uniform`); ``copy`` numbers the random points drawn
at once per event (random search, SPSA probes); ``position`` is the entry's flat index within
the event (``particle * features + feature``, unchanged when padding is trimmed).

The hash chains Wellons' ``lowbias32`` integer mixer (a bijection of 32-bit integers with low
bias), computed in int64 arithmetic that never overflows, so CPU and CUDA give the same bits.
A uniform number is the hash's top 24 bits times 2^-24: exact in float32, in [0, 1).

Attacks must draw in the same order in every batch: a loop may stop early only when all its
events are finished, and a finished event draws nothing more that changes its outcome. Where an
attack runs parts whose number depends on the batch (restarts, ensemble members, bisection
probes), each part draws from its own stream (:meth:`EventRandom.fork`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import TypeVar

import torch

# recorded in report.json and baselines: figures of two runs compare exactly only when equal
SCHEME = "event-hash-1"

MASK32 = 0xFFFFFFFF
UNIT = 2.0**-24  # a uniform number is the hash's top 24 bits times this

T = TypeVar("T", int, torch.Tensor)


def _mul32(x: T, c: int) -> T:
    """``x * c`` modulo 2^32 for ``x`` in [0, 2^32), in products below 2^49 (no overflow)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix(x: T) -> T:
    """Wellons' lowbias32 mixer of 32-bit integers (Python ints or int64 tensors)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stream_key(seed: int, label: str) -> int:
    """The 32-bit key of the stream named ``label`` (an attack's method) under ``seed``."""
    seed = int(seed) % 2**64
    key = mix(mix((seed & MASK32) ^ 0x9E3779B9) ^ (seed >> 32))
    return mix(key ^ zlib.crc32(label.encode()))


@dataclass(frozen=True)
class EventRandom:
    """The random streams of a batch's events (``events``: their indices in the sample).

    ``copies``, when set, numbers the points of draws shaped (copies, events, ...).
    Views made by :meth:`subset` share the draw counter with the stream they come from.
    """

    key: int
    events: torch.Tensor
    counter: list[int] = field(default_factory=lambda: [0])
    copies: torch.Tensor | None = None
    # each event's hash of (key, event): computed once, not at every draw
    hashed: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        events = self.events
        hashed = mix(mix(self.key ^ (events & MASK32)) ^ (events >> 32))
        object.__setattr__(self, "hashed", hashed)

    @classmethod
    def of(cls, seed: int, label: str, events: torch.Tensor) -> EventRandom:
        return cls(stream_key(seed, label), events.to(torch.int64))

    def fork(self, label: str) -> EventRandom:
        """An independent stream for a part of the attack, with its own draw counter."""
        return EventRandom(mix(self.key ^ zlib.crc32(label.encode())), self.events)

    def subset(self, rows: torch.Tensor | slice) -> EventRandom:
        """The streams of some of the events (sharing the draw counter)."""
        return replace(self, events=self.events[rows])

    def with_copies(self, copies: torch.Tensor) -> EventRandom:
        """A stream for draws of ``len(copies)`` points per event numbered ``copies`` (e.g.
        the sample numbers of a random search), with its own draw counter: point ``k`` of an
        event gets the same numbers whichever draw it comes in."""
        return EventRandom(self.key, self.events, [0], copies.to(self.events.device))

    def uniform(
        self,
        shape: tuple[int, ...] | torch.Size,
        dtype: torch.dtype = torch.float32,
        copies: bool = False,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uniform numbers in [0, 1) shaped ``shape``: (events, ...) or, with ``copies``,
        (copies, events, ...). With ``columns`` (indices into the last axis) only those
        columns are drawn, with the numbers they have in the full draw."""
        draw = self.counter[0]
        self.counter[0] += 1
        device = self.events.device
        h = mix(self.hashed ^ draw)
        lead = 1
        if copies:
            ids = self.copies
            if ids is None:
                ids = torch.arange(shape[0], device=device)
            if len(ids) != shape[0]:
                raise ValueError(f"{len(ids)} copy numbers for a draw of {shape[0]} copies")
            h = mix(h.unsqueeze(0) ^ ids.unsqueeze(1))
            lead = 2
        if h.shape != tuple(shape[:lead]):
            raise ValueError(f"a draw shaped {tuple(shape)} for {len(self.events)} events")
        rest = tuple(shape[lead:])
        if rest:
            width = rest[-1]
            cols = torch.arange(width, device=device) if columns is None else columns.to(device)
            outer = 1
            for size in rest[:-1]:
                outer *= size
            position = torch.arange(outer, device=device).unsqueeze(1) * width + cols
            position = position.view(*rest[:-1], len(cols))
            h = mix(h.view(*h.shape, *([1] * len(rest))) ^ position)
        return (h >> 8).to(dtype) * UNIT

    def uniform_like(self, x: torch.Tensor, copies: bool = False) -> torch.Tensor:
        """Uniform numbers shaped, typed and placed like ``x``."""
        return self.uniform(x.shape, x.dtype, copies)
