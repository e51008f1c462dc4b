"""Data reader: Apache Parquet files through pyarrow; keys are column names.

A list-typed column (a variable number of entries per event) is read as a jagged array and
padded like a jagged ROOT branch; a fixed-size list column becomes a regular axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustcheck.data import Array, Jagged, missing_error
from robustcheck.data.reader import reader
from robustcheck.errors import DataError


@reader(streams=True)
def read_parquet(
    path: Path,
    keys: list[str],
    tree: str | None = None,
    max_events: int | None = None,
    start: int = 0,
) -> dict[str, Array]:
    """Columns of events ``start:start+max_events``, reading only the row groups they lie in."""
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
        if start == 0 and max_events is None:
            table = handle.read(columns=columns)
        else:
            table = _rows(handle, columns, start, max_events, schema, pa)
    return {key: _column(table.column(key).combine_chunks(), key, path, pa) for key in columns}


def _rows(handle: Any, columns: list[str], start: int, count: int | None, schema: Any, pa: Any):  # type: ignore[no-untyped-def]
    """Rows ``start:start+count`` from the row groups that hold them."""
    metadata = handle.metadata
    stop = metadata.num_rows if count is None else min(metadata.num_rows, start + count)
    groups, first, offset = [], None, 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if offset + rows > start and offset < stop:
            groups.append(group)
            first = offset if first is None else first
        offset += rows
    selected = pa.schema([schema.field(key) for key in columns])
    if not groups:
        return selected.empty_table()
    table = handle.read_row_groups(groups, columns=columns)
    return table.slice(start - first, max(0, stop - start))


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
