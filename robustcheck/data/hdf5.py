"""Data reader: HDF5 files through h5py; keys are dataset paths such as ``jets/pt``.

Variable-length datasets (``h5py.vlen_dtype``) are read as jagged arrays and padded like
jagged ROOT branches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustcheck.data import Array, Jagged, missing_error
from robustcheck.data.reader import reader
from robustcheck.errors import DataError


@reader(streams=True)
def read_hdf5(
    path: Path,
    keys: list[str],
    tree: str | None = None,
    max_events: int | None = None,
    start: int = 0,
) -> dict[str, Array]:
    try:
        import h5py
    except ImportError:
        raise DataError(
            "reading HDF5 files needs h5py", file=path, fix="pip install h5py"
        ) from None
    try:
        handle = h5py.File(path, "r")
    except Exception as exc:
        raise DataError(f"cannot read as HDF5: {exc}", file=path) from None
    with handle:
        missing = [key for key in keys if not isinstance(handle.get(key), h5py.Dataset)]
        if missing:
            raise missing_error(
                path,
                "dataset(s)",
                missing,
                _datasets(handle, h5py),
                fix="name datasets by their path in the file, e.g. `jets/pt`",
            )
        out: dict[str, Array] = {}
        for key in dict.fromkeys(keys):
            dataset = handle[key]
            if dataset.shape is None or dataset.ndim == 0:
                raise DataError(
                    f"dataset `{key}` is a scalar, not one entry per event",
                    file=path,
                    fix="store one row per event",
                )
            if start == 0 and max_events is None:
                value = dataset[()]
            else:
                stop = None if max_events is None else start + max_events
                value = dataset[start:stop]
            base = h5py.check_vlen_dtype(dataset.dtype)
            if base is not None and base not in (str, bytes):
                value = Jagged.from_lists(value, np.dtype(base))
            out[key] = value
        return out


def _datasets(handle, h5py) -> list[str]:  # type: ignore[no-untyped-def]
    names: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append(name)

    handle.visititems(visit)
    return names
