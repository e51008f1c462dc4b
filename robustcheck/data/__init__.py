"""Data readers: one module per file format, chosen by suffix; shared validation here.

A reader (:class:`~robustcheck.data.reader.Reader`) is ``read(path, keys, tree=None,
max_events=None, start=0) -> dict[str, array]``: it
returns one entry per key, a numpy array with one row per event or a :class:`Jagged` for a
variable-length (per event) branch or column, for the events ``start`` to
``start + max_events`` (fewer at the end of the file), reading no more of the file than its
library needs, and raises :class:`DataError` naming what the file holds when a key is missing.
Padding, stacking, masks and validation happen here, the same for every format.
:func:`read_chunks` streams a sample in chunks of events, for files larger than memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import difflib
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from robustcheck import registry
from robustcheck.data.formats import READERS as READERS  # re-exported
from robustcheck.data.reader import Reader, as_reader
from robustcheck.errors import DataError
from robustcheck.spec import DataSpec


@dataclass(frozen=True)
class Jagged:
    """A variable number of entries per event: flat ``content`` cut by ``counts``."""

    counts: np.ndarray  # (events,) int64
    content: np.ndarray  # (sum(counts), ...)

    @classmethod
    def from_lists(cls, rows: Sequence[np.ndarray], dtype: np.dtype | None = None) -> Jagged:
        counts = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        if len(rows) and counts.sum():
            content = np.concatenate([np.asarray(row) for row in rows])
        else:
            content = np.zeros(0, dtype=dtype if dtype is not None else np.float64)
        return cls(counts, content)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def dtype(self) -> np.dtype:
        return self.content.dtype

    def head(self, n: int) -> Jagged:
        """The first ``n`` events."""
        if n >= len(self.counts):
            return self
        counts = self.counts[:n]
        return Jagged(counts, self.content[: int(counts.sum())])

    def padded(self, length: int, value: float = 0) -> np.ndarray:
        """(events, length, ...) with the leading ``length`` entries of each event."""
        n = len(self.counts)
        kept = np.minimum(self.counts, length)
        out = np.full((n, length, *self.content.shape[1:]), value, dtype=self.content.dtype)
        starts = np.cumsum(self.counts) - self.counts
        ends = np.cumsum(kept)
        cols = np.arange(int(ends[-1]) if n else 0) - np.repeat(ends - kept, kept)
        rows = np.repeat(np.arange(n), kept)
        out[rows, cols] = self.content[np.repeat(starts, kept) + cols]
        return out

    def mask(self, length: int) -> np.ndarray:
        """(events, length) float32: 1.0 for real entries, 0.0 for padding."""
        return (np.arange(length)[None, :] < self.counts[:, None]).astype(np.float32)


Array = np.ndarray | Jagged


@dataclass(frozen=True)
class Truncated:
    """Events cut to the ``pad`` length: how many, of how many, the longest, which arrays."""

    events: int
    of: int
    longest: int
    names: str

    def add(self, other: Truncated) -> Truncated:
        return Truncated(
            self.events + other.events,
            self.of + other.of,
            max(self.longest, other.longest),
            other.names,
        )


@dataclass
class Dataset:
    """Named model inputs and labels of one sample, as numpy arrays."""

    name: str
    source: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def load_dataset(spec: DataSpec, spec_file: Path) -> Dataset:
    """Read and validate the arrays a [data.NAME] table names."""
    read = _reader(spec, spec_file)
    arrays = read(spec.path, spec.keys(), spec.tree, max_events=spec.max_events)
    if spec.max_events is not None:
        arrays = {key: _head(value, spec.max_events) for key, value in arrays.items()}
    dataset, truncated = _assemble(arrays, spec)
    if truncated:
        _warn_truncated(spec, truncated)
    return dataset


def read_chunks(spec: DataSpec, spec_file: Path, size: int) -> Iterator[tuple[int, Dataset]]:
    """``(first event, dataset)`` for consecutive chunks of at most ``size`` events.

    Only one chunk is in memory at a time, when the caller drops its references to a chunk
    before asking for the next (``del`` at the end of the loop body). Each chunk is
    validated as a whole sample is; event numbers in messages count from the start of the
    file. Events truncated to the ``pad`` length are counted over the whole sample and warned
    about once, at the end.
    """
    read = _reader(spec, spec_file)
    if not read.streams:
        raise DataError(
            f"the reader for `{spec.path.suffix}` files cannot read a range of events "
            "(it does not declare `streams = True`)",
            file=spec_file,
            field=f"data.{spec.name}.chunk_size",
            fix="remove chunk_size to read the whole file at once",
        )
    start, truncated = 0, Truncated(0, 0, 0, "")
    while spec.max_events is None or start < spec.max_events:
        count = size if spec.max_events is None else min(size, spec.max_events - start)
        arrays = read(spec.path, spec.keys(), spec.tree, max_events=count, start=start)
        arrays = {key: _head(value, count) for key, value in arrays.items()}
        n = max((len(value) for value in arrays.values()), default=0)
        if n == 0:
            break
        dataset, over = _assemble(arrays, spec, start)
        del arrays
        if over:
            truncated = truncated.add(over)
        yield start, dataset
        del dataset  # the caller has dropped its references to the chunk by now
        release_freed_memory()
        start += n
        if n < count:
            break
    if truncated.events:
        _warn_truncated(spec, replace(truncated, of=start))


def read_range(
    spec: DataSpec, spec_file: Path, start: int, count: int
) -> tuple[Dataset, Truncated | None]:
    """The events ``start`` to ``start + count`` of a streamed sample, validated as a chunk of
    :func:`read_chunks` is (a Dask worker reads its own range with this), and the events
    cut to ``pad`` (warned about by the caller, over the whole sample)."""
    read = _reader(spec, spec_file)
    arrays = read(spec.path, spec.keys(), spec.tree, max_events=count, start=start)
    arrays = {key: _head(value, count) for key, value in arrays.items()}
    return _assemble(arrays, spec, start)


def count_events(spec: DataSpec, spec_file: Path, step: int) -> int:
    """The number of events of a streamed sample (up to ``max_events``), reading its labels
    only, ``step`` events at a time."""
    read = _reader(spec, spec_file)
    start = 0
    while spec.max_events is None or start < spec.max_events:
        count = step if spec.max_events is None else min(step, spec.max_events - start)
        labels = read(spec.path, [spec.labels], spec.tree, max_events=count, start=start)
        n = min(len(labels[spec.labels]), count)
        start += n
        if n < count:
            break
    return start


def release_freed_memory() -> None:
    """Give the pages of freed chunks back to the system (glibc only; elsewhere a no-op).

    Chunks are allocated and freed over and over; glibc keeps freed blocks above its mmap
    threshold on the heap, where the small per-event arrays in between fragment it, and the
    resident memory of a long stream creeps up without this.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def _reader(spec: DataSpec, spec_file: Path) -> Reader:
    readers = registry.data_readers()
    declared = readers.get(spec.path.suffix.lower())
    if declared is None:
        raise DataError(
            f"no reader for `{spec.path.suffix}` files",
            file=spec_file,
            field=f"data.{spec.name}.path",
            fix=f"use one of {', '.join(readers)}",
        )
    return as_reader(declared.load())


def _assemble(
    arrays: dict[str, Array], spec: DataSpec, start: int = 0
) -> tuple[Dataset, Truncated | None]:
    """A validated Dataset from the arrays read, and the events cut to ``pad`` (or None)."""
    where = f"data.{spec.name}"
    counts = {key: len(value) for key, value in arrays.items()}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"arrays have different event counts: {counts}"
            + (f" in the chunk from event {start}" if start else ""),
            file=spec.path,
            field=f"{where}.inputs",
            fix="every array needs one entry per event",
        )
    if isinstance(arrays[spec.labels], Jagged):
        raise DataError(
            f"labels `{spec.labels}` vary in length per event",
            file=spec.path,
            field=f"{where}.labels",
            fix="labels must be one integer class index per event",
        )
    padded, truncated = _pad(arrays, spec, where, start)
    for key, value in padded.items():
        _check_finite(value, key, spec.path, where, start)
    labels = _labels(padded[spec.labels], spec.path, f"{where}.labels")
    inputs: dict[str, np.ndarray] = {}
    for name, source in spec.inputs.items():
        if isinstance(source, str):
            inputs[name] = padded[source]
        elif isinstance(source, tuple):
            inputs[name] = _stack(name, source, arrays, padded, spec, where)
    for name, target in spec.masks.items():
        inputs[name] = _mask(name, target, arrays, spec, where)
    inputs = {name: inputs[name] for name in spec.inputs}
    weights = None
    if spec.weights is not None:
        weights = _weights(padded[spec.weights], spec.path, f"{where}.weights")
    return Dataset(spec.name, spec.path, inputs, labels, weights), truncated


def _warn_truncated(spec: DataSpec, truncated: Truncated) -> None:
    warnings.warn(
        f"{spec.path}: data.{spec.name}: {truncated.events} of {truncated.of} events have more "
        f"than pad = {spec.pad} entries in {truncated.names} (largest {truncated.longest}); "
        f"kept the leading {spec.pad}",
        UserWarning,
        stacklevel=3,
    )


def _weights(value: np.ndarray, source: Path, where: str) -> np.ndarray:
    if value.ndim != 1:
        raise DataError(
            f"weights must be one number per event, got shape {value.shape}",
            file=source,
            field=where,
        )
    weights = value.astype(np.float64)
    if np.any(weights < 0) or not weights.sum() > 0:
        raise DataError(
            "weights must be non-negative with a positive sum",
            file=source,
            field=where,
            fix="negative-weight events are not supported yet",
        )
    return weights


def missing_error(
    path: Path,
    kind: str,
    missing: Sequence[str],
    available: Iterable[str],
    fix: str = "fix the names in [data.*] labels/inputs",
    place: str = "the file",
    limit: int = 60,
) -> DataError:
    """A DataError for names not in a file, listing what the file holds."""
    available = list(available)
    shown = ", ".join(f"`{name}`" for name in available[:limit]) or "nothing"
    if len(available) > limit:
        shown += f", ... ({len(available) - limit} more)"
    close = [
        f"`{name}` -> `{match[0]}`"
        for name in missing
        if (match := difflib.get_close_matches(name, available, n=1, cutoff=0.6))
    ]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    missing_text = ", ".join(f"`{name}`" for name in missing)
    return DataError(
        f"no {kind} {missing_text} in {place}; it holds {shown}",
        file=path,
        fix=hint + fix,
    )


def _head(value: Array, n: int) -> Array:
    return value.head(n) if isinstance(value, Jagged) else value[:n]


def _pad(
    arrays: dict[str, Array], spec: DataSpec, where: str, start: int = 0
) -> tuple[dict[str, np.ndarray], Truncated | None]:
    """Every array as numpy: jagged ones padded to ``spec.pad`` (after the truncation check),
    and, when some events were cut to ``pad``, (how many, of how many, the longest)."""
    jagged = {key: value for key, value in arrays.items() if isinstance(value, Jagged)}
    if jagged and spec.pad is None:
        longest = max(int(value.counts.max(initial=0)) for value in jagged.values())
        raise DataError(
            f"{_names(jagged)} vary in length per event, and no `pad` length is set",
            file=spec.path,
            field=f"{where}.pad",
            fix=f"add `pad = N` to [{where}] (the longest event here has {longest} entries)",
        )
    truncated = None
    if jagged and spec.pad is not None:
        over = np.zeros(len(next(iter(jagged.values()))), dtype=bool)
        for value in jagged.values():
            over |= value.counts > spec.pad
        if over.any():
            longest = max(int(value.counts.max()) for value in jagged.values())
            truncated = Truncated(int(over.sum()), len(over), longest, _names(jagged))
            if spec.truncate == "error":
                first = start + int(np.flatnonzero(over)[0])
                raise DataError(
                    f"{int(over.sum())} of {len(over)} events "
                    + (f"(from event {start}) " if start else "")
                    + f"have more than pad = {spec.pad} entries in {_names(jagged)} (largest "
                    f"{longest}, first at event {first})",
                    file=spec.path,
                    field=f"{where}.pad",
                    fix=f'raise `pad` to {longest}, or set truncate = "warn" to keep the '
                    f"leading {spec.pad}",
                )
    padded = {
        key: value.padded(spec.pad) if isinstance(value, Jagged) else value  # type: ignore[arg-type]
        for key, value in arrays.items()
    }
    return padded, truncated


def _names(arrays: Iterable[str]) -> str:
    return ", ".join(f"`{key}`" for key in arrays)


def _stack(
    name: str,
    keys: tuple[str, ...],
    arrays: dict[str, Array],
    padded: dict[str, np.ndarray],
    spec: DataSpec,
    where: str,
) -> np.ndarray:
    """Arrays stacked along a new last axis: (events, F) or (events, pad, F)."""
    field = f"{where}.inputs.{name}"
    jagged = [key for key in keys if isinstance(arrays[key], Jagged)]
    if jagged and len(jagged) != len(keys):
        flat = [key for key in keys if key not in jagged]
        raise DataError(
            f"cannot stack jagged {_names(jagged)} with per-event {_names(flat)}",
            file=spec.path,
            field=field,
            fix="stack branches of one kind: all one value per event, or all per particle",
        )
    if jagged:
        first = arrays[keys[0]]
        for key in keys[1:]:
            differ = np.flatnonzero(arrays[key].counts != first.counts)  # type: ignore[union-attr]
            if differ.size:
                event = int(differ[0])
                raise DataError(
                    f"`{keys[0]}` and `{key}` have different lengths in {differ.size} events "
                    f"(first: event {event}, {int(first.counts[event])} vs "  # type: ignore[union-attr]
                    f"{int(arrays[key].counts[event])})",  # type: ignore[union-attr]
                    file=spec.path,
                    field=field,
                    fix="stack only branches with one entry per particle of the same collection",
                )
    shapes = {key: padded[key].shape for key in keys}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"cannot stack arrays of different shapes: {shapes}",
            file=spec.path,
            field=field,
            fix="a list stacks arrays of one shape along a new last axis",
        )
    dtype = np.result_type(*(padded[key].dtype for key in keys))
    return np.stack([padded[key].astype(dtype, copy=False) for key in keys], axis=-1)


def _mask(
    name: str, target: str, arrays: dict[str, Array], spec: DataSpec, where: str
) -> np.ndarray:
    source = spec.inputs[target]
    key = source if isinstance(source, str) else source[0] if isinstance(source, tuple) else None
    value = arrays.get(key) if key is not None else None
    if not isinstance(value, Jagged):
        raise DataError(
            f"mask `{name}` is the padding mask of `{target}`, but `{target}` is not read "
            "from jagged (variable-length) branches",
            file=spec.path,
            field=f"{where}.masks.{name}",
            fix=f'store the mask in the file and map it in inputs ({name} = "...")',
        )
    return value.mask(spec.pad)  # type: ignore[arg-type]


def _check_finite(value: np.ndarray, key: str, source: Path, where: str, start: int = 0) -> None:
    if not np.issubdtype(value.dtype, np.number) and value.dtype != np.bool_:
        raise DataError(
            f"array `{key}` has dtype {value.dtype}, not numbers", file=source, field=where
        )
    if np.issubdtype(value.dtype, np.floating):
        bad = ~np.isfinite(value)
        if bad.any():
            first = np.argwhere(bad)[0]
            first[0] += start  # events count from the start of the file
            raise DataError(
                f"array `{key}` holds {int(bad.sum())} NaN/inf value(s), first at index "
                f"{tuple(int(i) for i in first)}",
                file=source,
                field=where,
                fix="replace missing values by a placeholder and declare it as the feature's "
                "`default` in the envelope, or drop those events",
            )


def _labels(value: np.ndarray, source: Path, where: str) -> np.ndarray:
    if value.ndim != 1:
        raise DataError(
            f"labels must be one integer per event, got shape {value.shape}",
            file=source,
            field=where,
            fix="store class indices, not one-hot rows",
        )
    labels = value.astype(np.int64)
    if np.any(labels != value) or np.any(labels < 0):
        raise DataError(
            "labels must be non-negative integers (class indices)", file=source, field=where
        )
    return labels
