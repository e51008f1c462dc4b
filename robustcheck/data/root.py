"""Data reader: ROOT files through uproot; ``tree`` names a TTree (or an RNTuple, which
recent uproot writes by default), keys are its branch (field) names.

Jagged branches (a variable number of entries per event) come back as :class:`Jagged` and are
padded to the spec's ``pad`` length by ``load_dataset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robustcheck.data import Array, Jagged, missing_error
from robustcheck.data.reader import reader
from robustcheck.errors import DataError

TREES = ["TTree", "ROOT::RNTuple"]


@reader(streams=True)
def read_root(
    path: Path,
    keys: list[str],
    tree: str | None = None,
    max_events: int | None = None,
    start: int = 0,
) -> dict[str, Array]:
    try:
        import awkward as ak
        import uproot
    except ImportError:
        raise DataError(
            "reading ROOT files needs uproot and awkward",
            file=path,
            fix="pip install uproot awkward",
        ) from None
    try:
        handle = uproot.open(path, array_cache=None)  # each call reads new entries
    except Exception as exc:
        raise DataError(f"cannot read as ROOT: {exc}", file=path) from None
    with handle:
        trees = list(dict.fromkeys(handle.keys(filter_classname=TREES, cycle=False)))
        listed = ", ".join(f"`{name}`" for name in trees) or "none"
        if tree is None:
            if len(trees) != 1:
                raise DataError(
                    f"the file holds {len(trees)} trees ({listed}) and no `tree` is set",
                    file=path,
                    fix=f'add tree = "{trees[0]}" to the [data.*] table'
                    if trees
                    else "write the events into a TTree",
                )
            tree = trees[0]
        elif tree not in trees:
            raise DataError(
                f"no tree `{tree}` in the file; its trees: {listed}",
                file=path,
                fix="set `tree` in the [data.*] table to one of those",
            )
        ttree = handle[tree]
        branches = list(ttree.keys())
        missing = [key for key in keys if key not in branches]
        if missing:
            raise missing_error(path, "branch(es)", missing, branches, place=f"tree `{tree}`")
        stop = None if max_events is None else start + max_events
        return {key: _branch(ttree[key], key, path, start, stop, ak) for key in dict.fromkeys(keys)}


def _branch(branch: Any, key: str, path: Path, start: int, stop: int | None, ak: Any) -> Array:
    try:
        array = branch.array(entry_start=start, entry_stop=stop, library="ak")
    except Exception as exc:
        raise DataError(f"cannot read branch `{key}`: {exc}", file=path) from None
    try:
        if array.ndim >= 2 and isinstance(array.type.content, ak.types.ListType):
            counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
            content = ak.to_numpy(ak.flatten(array, axis=1))
            return Jagged(counts, np.asarray(content))
        return np.asarray(ak.to_numpy(array))
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"branch `{key}` has type {array.type}, which cannot be read as numbers or one "
            f"variable-length list of numbers per event ({exc})",
            file=path,
            fix="read numeric branches, or jagged branches of numbers (e.g. constituent pT)",
        ) from None
