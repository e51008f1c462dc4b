"""Data reader: Apache Parquet files through pyarrow; keys are column names.

A list-typed column (a variable number of entries per event) is read as a jagged array and
padded like a jagged ROOT branch; a fixed-size list column becomes a regular axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustcheck.data import Array, Jagged, missing_error
from robustcheck.errors import DataError

BATCH = 65536


def read_parquet(
    path: Path, keys: list[str], tree: str | None = None, max_events: int | None = None
) -> dict[str, Array]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet files needs pyarrow", file=path, fix="pip install pyarrow"
        ) from None
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"cannot read as Parquet: {exc}", file=path) from None
    with handle:
        schema = handle.schema_arrow
        missing = [key for key in keys if key not in schema.names]
        if missing:
            raise missing_error(path, "column(s)", missing, schema.names)
        columns = list(dict.fromkeys(keys))
        if max_events is None:
            table = handle.read(columns=columns)
        else:
            batches, rows = [], 0
            for batch in handle.iter_batches(batch_size=min(max_events, BATCH), columns=columns):
                batches.append(batch)
                rows += batch.num_rows
                if rows >= max_events:
                    break
            selected = pa.schema([schema.field(key) for key in columns])
            table = pa.Table.from_batches(batches, schema=selected).slice(0, max_events)
    return {key: _column(table.column(key).combine_chunks(), key, path, pa) for key in columns}


def _column(array: Any, key: str, path: Path, pa: Any, nested: bool = False) -> Array:
    types = pa.types
    if array.null_count:
        raise DataError(
            f"column `{key}` holds {array.null_count} null value(s)",
            file=path,
            fix="fill missing values with a placeholder (declared as the feature's `default`)",
        )
    if types.is_list(array.type) or types.is_large_list(array.type):
        if nested:
            raise DataError(
                f"column `{key}` is a list of lists ({array.type}); only one variable-length "
                "level can be padded",
                file=path,
            )
        counts = array.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        content = _column(array.flatten(), key, path, pa, nested=True)
        return Jagged(counts, content)  # type: ignore[arg-type]
    if types.is_fixed_size_list(array.type):
        content = _column(array.flatten(), key, path, pa, nested=nested)
        if isinstance(content, Jagged):  # pragma: no cover - rejected above
            raise DataError(f"column `{key}` has unsupported type {array.type}", file=path)
        return content.reshape(len(array), array.type.list_size, *content.shape[1:])
    if (
        types.is_integer(array.type)
        or types.is_floating(array.type)
        or types.is_boolean(array.type)
    ):
        return array.to_numpy(zero_copy_only=False)
    raise DataError(
        f"column `{key}` has type {array.type}, not numbers or lists of numbers",
        file=path,
        fix="store numeric columns (or lists of numbers for per-particle quantities)",
    )
