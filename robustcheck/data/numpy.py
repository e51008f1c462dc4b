"""Data reader: numpy ``.npz`` archives and single ``.npy`` arrays.

Both read a range of events without loading the rest: ``.npy`` through a memory map, ``.npz``
by seeking in the archive member (which decompresses from its start when compressed).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from robustcheck.data.reader import reader
from robustcheck.errors import DataError


@reader(streams=True)
def read_npz(
    path: Path,
    keys: list[str],
    tree: str | None = None,
    max_events: int | None = None,
    start: int = 0,
) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read as .npz: {exc}", file=path) from None
    with archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise DataError(
                f"no array(s) {missing} in the file; it holds {archive.files}",
                file=path,
                fix="fix the array names in [data.*] labels/inputs",
            )
        if start == 0 and max_events is None:
            return {key: archive[key] for key in dict.fromkeys(keys)}
    with zipfile.ZipFile(path) as handle:
        return {key: _npz_rows(handle, key, path, start, max_events) for key in dict.fromkeys(keys)}


def _npz_rows(
    archive: zipfile.ZipFile, key: str, path: Path, start: int, count: int | None
) -> np.ndarray:
    """Rows ``start:start+count`` of one archive member, reading only those bytes."""
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        if dtype.hasobject:
            raise DataError(f"array `{key}` holds Python objects, not numbers", file=path)
        if fortran or not shape:  # rare: read whole, then cut (a scalar is refused later)
            whole = np.load(path, allow_pickle=False)[key]
            return whole if not shape else whole[start : None if count is None else start + count]
        n = shape[0]
        stop = n if count is None else min(n, start + count)
        rows = max(0, stop - min(start, n))
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        member.seek(member.tell() + min(start, n) * row_bytes)
        data = member.read(rows * row_bytes)
    return np.frombuffer(data, dtype=dtype).reshape(rows, *shape[1:]).copy()


@reader(streams=True)
def read_npy(
    path: Path,
    keys: list[str],
    tree: str | None = None,
    max_events: int | None = None,
    start: int = 0,
) -> dict[str, np.ndarray]:
    """A structured .npy array: each key is a field name."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read as .npy: {exc}", file=path) from None
    fields = list(array.dtype.names or ())
    missing = [key for key in keys if key not in fields]
    if missing:
        raise DataError(
            f"no field(s) {missing} in the structured array; it has {fields}",
            file=path,
            fix="a .npy file must be a structured array with named fields",
        )
    stop = None if max_events is None else start + max_events
    return {key: np.array(array[key][start:stop]) for key in dict.fromkeys(keys)}
