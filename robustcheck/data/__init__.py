"""Data readers: one module per file format, chosen by suffix; shared validation here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustcheck.errors import DataError
from robustcheck.registry import Declaration
from robustcheck.spec import DataSpec

READERS: dict[str, Declaration] = {
    ".npz": Declaration(".npz", "robustcheck.data.numpy:read_npz", doc="numpy archive"),
    ".npy": Declaration(".npy", "robustcheck.data.numpy:read_npy", doc="numpy array"),
}


@dataclass
class Dataset:
    """Named model inputs and labels of one sample, as numpy arrays."""

    name: str
    source: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_dataset(spec: DataSpec, spec_file: Path) -> Dataset:
    """Read and validate the arrays a [data.NAME] table names."""
    reader = READERS.get(spec.path.suffix)
    if reader is None:
        raise DataError(
            f"no reader for `{spec.path.suffix}` files",
            file=spec_file,
            field=f"data.{spec.name}.path",
            fix=f"use one of {', '.join(READERS)}",
        )
    keys = [spec.labels, *spec.inputs.values()]
    arrays = reader.load()(spec.path, keys, spec.tree)
    if spec.max_events is not None:
        arrays = {key: value[: spec.max_events] for key, value in arrays.items()}
    where = f"data.{spec.name}"
    counts = {key: len(value) for key, value in arrays.items()}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"arrays have different event counts: {counts}",
            file=spec.path,
            field=f"{where}.inputs",
            fix="every array needs one entry per event",
        )
    for key, value in arrays.items():
        _check_finite(value, key, spec.path, where)
    labels = _labels(arrays[spec.labels], spec.path, f"{where}.labels")
    inputs = {name: arrays[key] for name, key in spec.inputs.items()}
    return Dataset(spec.name, spec.path, inputs, labels)


def _check_finite(value: np.ndarray, key: str, source: Path, where: str) -> None:
    if not np.issubdtype(value.dtype, np.number) and value.dtype != np.bool_:
        raise DataError(
            f"array `{key}` has dtype {value.dtype}, not numbers", file=source, field=where
        )
    if np.issubdtype(value.dtype, np.floating):
        bad = ~np.isfinite(value)
        if bad.any():
            first = np.argwhere(bad)[0]
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
