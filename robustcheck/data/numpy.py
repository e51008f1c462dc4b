"""Data reader: numpy ``.npz`` archives and single ``.npy`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustcheck.errors import DataError


def read_npz(
    path: Path, keys: list[str], tree: str | None = None, max_events: int | None = None
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
        return {key: archive[key][:max_events] for key in dict.fromkeys(keys)}


def read_npy(
    path: Path, keys: list[str], tree: str | None = None, max_events: int | None = None
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
    return {key: np.array(array[key][:max_events]) for key in dict.fromkeys(keys)}
