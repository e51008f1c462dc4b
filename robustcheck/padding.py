"""Trimming padded particle inputs to each batch's longest jet (``[inputs.NAME] trim_padding``).

A particle input holds a fixed number of slots per jet, most of them padding: the quark/gluon
jets of the example have 30-60 real constituents in 128 slots. Attention and kNN cost grows
with the square of the slots, so a model that ignores padding runs several times faster on a
batch cut to its longest jet, and faster still when batches group jets of similar
multiplicity. Both are valid only for a model whose scores do not depend on the number of
padding slots; robustcheck verifies that on the nominal sample before it trims.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

Inputs = dict[str, torch.Tensor]

# the largest difference of any class probability, trimmed against untrimmed, that still
# counts as "the same scores" (float32 sums in another order differ by ~1e-7)
TRIM_TOLERANCE = 1.0e-4
# jets of the nominal sample the verification compares, in batches of VERIFY_BATCH so that the
# trimmed widths vary from batch to batch
VERIFY_EVENTS = 1024
VERIFY_BATCH = 64
# Events are ordered by multiplicity within windows of this many consecutive events of the
# sample (by position), never across: a sample split into ranges of whole windows (Dask) or
# read in chunks that are multiples of it forms the same trimmed batches as one process.
TRIM_WINDOW = 65536


@dataclass(frozen=True)
class PaddingTrim:
    """Mask inputs and the padded inputs they mask, all cut along the slot axis (axis 1)."""

    groups: Mapping[str, tuple[str, ...]]  # mask input -> the padded inputs it masks

    @classmethod
    def of(cls, masks: Iterable[tuple[str, str]]) -> PaddingTrim | None:
        """From (padded input, its mask) pairs; None when there are none."""
        groups: dict[str, list[str]] = {}
        for name, mask in masks:
            groups.setdefault(mask, []).append(name)
        if not groups:
            return None
        return cls({mask: tuple(names) for mask, names in groups.items()})

    def slots_needed(self, inputs: Inputs) -> torch.Tensor:
        """Per event, the slots up to and including its last real entry (over every mask)."""
        needed: torch.Tensor | None = None
        for mask in self.groups:
            real = inputs[mask] != 0
            position = torch.arange(1, real.shape[1] + 1, device=real.device)
            last = (real * position).amax(1)
            needed = last if needed is None else torch.maximum(needed, last)
        assert needed is not None
        return needed

    def order(self, inputs: Inputs, index: torch.Tensor) -> torch.Tensor:
        """``index`` sorted by the slots each event needs (stable), so that batches group jets
        of similar multiplicity and each is cut to little more than its own length."""
        needed = self.slots_needed({mask: inputs[mask][index] for mask in self.groups})
        return index[torch.sort(needed, stable=True).indices]

    def widths(self, batch: Inputs) -> dict[str, int]:
        """Per mask input, the slots up to the last real entry of any event of the batch (at
        least one)."""
        out = {}
        for mask in self.groups:
            real = batch[mask] != 0
            position = torch.arange(1, real.shape[1] + 1, device=real.device)
            out[mask] = max(int((real * position).amax()), 1)  # one host sync per batch
        return out

    def cut(self, batch: Inputs, widths: Mapping[str, int] | None = None) -> Inputs:
        """The batch with the slots that are padding in every event removed (at least one
        slot is kept), or cut to the given ``widths`` (those of the batch it was split from,
        so that a split changes no event's arithmetic)."""
        widths = widths or self.widths(batch)
        out = dict(batch)
        for mask, names in self.groups.items():
            for name in (mask, *names):
                out[name] = batch[name][:, : widths[mask]]
        return out


def paste(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """Write a (possibly trimmed) batch back into the full-width ``target`` at ``rows``."""
    if values.dim() >= 2 and values.shape[1] != target.shape[1]:
        target[rows, : values.shape[1]] = values
    else:
        target[rows] = values
