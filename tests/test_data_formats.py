"""Data readers: HDF5, Parquet and ROOT give the same arrays as .npz; jagged branches are
padded with a mask; truncation, missing names and max_events behave as the spec says."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustcheck.data import Jagged, load_dataset
from robustcheck.errors import DataError, SpecError
from robustcheck.spec import DataSpec, MaskOf, parse_spec

N = 40
LONGEST = 12


def flat_events(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "y": rng.integers(0, 2, N).astype(np.int64),
        "pt": rng.uniform(500, 550, N).astype(np.float32),
        "eta": rng.uniform(-2, 2, N).astype(np.float32),
        "mass": rng.gamma(4, 8.0, N).astype(np.float64),
    }


def jagged_events(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, list]]:
    """Flat labels, per-event counts and per-particle lists (c_pt, c_eta)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 9, N)
    counts[[3, 17]] = [LONGEST, 10]  # two events longer than pad = 8
    lists = {
        "c_pt": [rng.uniform(1, 100, n).astype(np.float32) for n in counts],
        "c_eta": [rng.uniform(-2, 2, n).astype(np.float32) for n in counts],
    }
    flat = {"y": rng.integers(0, 2, N).astype(np.int64), "pt": rng.uniform(0, 1, N)}
    return flat, counts, lists


def padded(rows: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i, : min(len(row), length)] = row[:length]
    return out


# --- writers -------------------------------------------------------------------------------


def write_npz(path: Path, flat: dict[str, np.ndarray], lists: dict[str, list]) -> Path:
    assert not lists
    np.savez(path, **flat)
    return path


def write_h5(path: Path, flat: dict[str, np.ndarray], lists: dict[str, list]) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        for key, value in flat.items():
            handle.create_dataset(key, data=value)
        handle.create_dataset("jets/pt", data=flat.get("pt", np.zeros(N)))
        for key, rows in lists.items():
            dataset = handle.create_dataset(key, (N,), dtype=h5py.vlen_dtype(np.float32))
            for i, row in enumerate(rows):
                dataset[i] = row
    return path


def write_parquet(path: Path, flat: dict[str, np.ndarray], lists: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = dict(flat)
    for key, rows in lists.items():
        columns[key] = pa.array([row.tolist() for row in rows], type=pa.list_(pa.float32()))
    pq.write_table(pa.table(columns), path, row_group_size=16)
    return path


def awkward_rows(rows: list[np.ndarray]) -> Any:
    import awkward as ak

    return ak.unflatten(np.concatenate(rows), [len(row) for row in rows])


def write_root(
    path: Path, flat: dict[str, np.ndarray], lists: dict[str, list], trees: tuple[str, ...] = ()
) -> Path:
    """A TTree `Events`; jagged lists become branches `c_pt`, `c_eta` sharing a counter."""
    import awkward as ak
    import uproot

    branches: dict[str, Any] = dict(flat)
    if lists:
        branches["c"] = ak.zip({key[2:]: awkward_rows(rows) for key, rows in lists.items()})
    with uproot.recreate(path) as handle:
        types = {
            key: getattr(value, "dtype", None) or value.type for key, value in branches.items()
        }
        handle.mktree("Events", types).extend(branches)
        for name in trees:
            handle.mktree(name, {"run": np.int64}).extend({"run": np.arange(3)})
    return path


def write_rntuple(path: Path, flat: dict[str, np.ndarray], lists: dict[str, list]) -> Path:
    """An RNTuple `Events` (what uproot writes by default) with jagged fields."""
    import uproot

    fields: dict[str, Any] = dict(flat)
    fields.update({key: awkward_rows(rows) for key, rows in lists.items()})
    with uproot.recreate(path) as handle:
        handle["Events"] = fields
    return path


WRITERS: dict[str, Callable[..., Path]] = {
    ".h5": write_h5,
    ".hdf5": write_h5,
    ".parquet": write_parquet,
    ".root": write_root,
    "rntuple.root": write_rntuple,
}
JAGGED_WRITERS = [".h5", ".parquet", ".root", "rntuple.root"]


def spec_for(path: Path, name: str = "nominal", **options: Any) -> DataSpec:
    inputs = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in options.pop("inputs").items()
    }
    for key, target in options.pop("masks", {}).items():
        inputs[key] = MaskOf(target)
    values = {"labels": "y", "max_events": None, "tree": None, **options}
    return DataSpec(name=name, path=path, inputs=inputs, **values)


def load(path: Path, **options: Any) -> Any:
    return load_dataset(spec_for(path, **options), path.parent / "robustness.toml")


# --- same arrays as .npz ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_flat_columns_match_npz(tmp_path: Path, suffix: str) -> None:
    flat = flat_events()
    inputs = {"jet": ["pt", "eta", "mass"], "pt": "pt"}
    reference = load(write_npz(tmp_path / "ref.npz", flat, {}), inputs=inputs)
    data = load(WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, {}), inputs=inputs)
    assert list(data.inputs) == ["jet", "pt"]
    assert data.inputs["jet"].shape == (N, 3)
    np.testing.assert_array_equal(data.labels, reference.labels)
    for name, value in reference.inputs.items():
        assert data.inputs[name].dtype == value.dtype
        np.testing.assert_array_equal(data.inputs[name], value)


def test_hdf5_dataset_paths(tmp_path: Path) -> None:
    flat = flat_events()
    data = load(write_h5(tmp_path / "data.h5", flat, {}), inputs={"pt": "jets/pt"})
    np.testing.assert_array_equal(data.inputs["pt"], flat["pt"])


# --- jagged branches --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_jagged_branches_are_padded_with_a_mask(tmp_path: Path, suffix: str) -> None:
    flat, counts, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    data = load(
        path,
        inputs={"parts": ["c_pt", "c_eta"], "pt": "c_pt"},
        masks={"mask": "parts"},
        pad=16,
    )
    assert list(data.inputs) == ["parts", "pt", "mask"]
    parts, mask = data.inputs["parts"], data.inputs["mask"]
    assert parts.shape == (N, 16, 2) and parts.dtype == np.float32
    assert mask.shape == (N, 16) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask.sum(axis=1), counts)
    np.testing.assert_array_equal(mask, np.arange(16)[None, :] < counts[:, None])
    expected = np.stack([padded(lists["c_pt"], 16), padded(lists["c_eta"], 16)], axis=-1)
    np.testing.assert_array_equal(parts, expected)
    np.testing.assert_array_equal(data.inputs["pt"], expected[..., 0])
    assert np.all(parts[mask == 0] == 0)

    # the same padded arrays stored in an .npz read back identically
    npz = tmp_path / "ref.npz"
    np.savez(npz, y=flat["y"], parts=expected, mask=mask, pt=expected[..., 0])
    reference = load(npz, inputs={"parts": "parts", "pt": "pt", "mask": "mask"})
    for name, value in reference.inputs.items():
        np.testing.assert_array_equal(data.inputs[name], value)


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_truncation_warns_or_raises(tmp_path: Path, suffix: str) -> None:
    flat, counts, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    options = {"inputs": {"parts": ["c_pt", "c_eta"]}, "masks": {"mask": "parts"}, "pad": 8}
    with pytest.warns(UserWarning, match=r"2 of 40 events have more than pad = 8 .*largest 12"):
        data = load(path, **options)
    assert data.inputs["parts"].shape == (N, 8, 2)
    np.testing.assert_array_equal(data.inputs["parts"][..., 0], padded(lists["c_pt"], 8))
    np.testing.assert_array_equal(data.inputs["mask"].sum(axis=1), np.minimum(counts, 8))
    with pytest.raises(DataError, match=r"2 of 40 events .*largest 12") as info:
        load(path, truncate="error", **options)
    assert "raise `pad` to 12" in str(info.value)


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_jagged_without_pad_names_the_branch(tmp_path: Path, suffix: str) -> None:
    flat, _, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    with pytest.raises(DataError, match=r"`c_pt` vary in length.*no `pad`") as info:
        load(path, inputs={"pt": "c_pt"})
    assert "pad = N" in str(info.value) and "12 entries" in str(info.value)


def test_mask_of_a_flat_input_is_an_error(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", flat_events(), {})
    with pytest.raises(DataError, match="not read from jagged"):
        load(path, inputs={"jet": ["pt", "eta"]}, masks={"mask": "jet"}, pad=4)


def test_stacking_branches_of_different_lengths_is_an_error(tmp_path: Path) -> None:
    flat, _, lists = jagged_events()
    lists["c_eta"] = lists["c_eta"][1:] + lists["c_eta"][:1]
    path = write_parquet(tmp_path / "data.parquet", flat, lists)
    with pytest.raises(DataError, match="different lengths"):
        load(path, inputs={"parts": ["c_pt", "c_eta"]}, pad=16)


# --- missing names ----------------------------------------------------------------------------


def test_missing_root_tree_lists_the_trees(tmp_path: Path) -> None:
    path = write_root(tmp_path / "data.root", flat_events(), {}, trees=("Runs",))
    with pytest.raises(DataError, match=r"no tree `events`.*`Events`, `Runs`"):
        load(path, inputs={"pt": "pt"}, tree="events")
    with pytest.raises(DataError, match=r"2 trees \(`Events`, `Runs`\) and no `tree`") as info:
        load(path, inputs={"pt": "pt"})
    assert 'tree = "Events"' in str(info.value)
    assert len(load(path, inputs={"pt": "pt"}, tree="Events")) == N


def test_single_root_tree_needs_no_name(tmp_path: Path) -> None:
    path = write_root(tmp_path / "data.root", flat_events(), {})
    assert len(load(path, inputs={"pt": "pt"})) == N


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [
        (".npz", "array(s)"),
        (".h5", "dataset(s)"),
        (".parquet", "column(s)"),
        (".root", "branch(es)"),
    ],
)
def test_missing_name_lists_what_exists(tmp_path: Path, suffix: str, kind: str) -> None:
    writer = WRITERS.get(suffix, write_npz)
    path = writer(tmp_path / f"data.{suffix.lstrip('.')}", flat_events(), {})
    with pytest.raises(DataError) as info:
        load(path, inputs={"pt": "p_t"}, tree="Events" if suffix == ".root" else None)
    message = str(info.value)
    assert str(path) in message
    if suffix == ".npz":  # the original .npz wording
        assert "no array(s) ['p_t'] in the file; it holds ['y', 'pt', 'eta', 'mass']" in message
        return
    assert f"no {kind} `p_t` in" in message
    for name in ("`y`", "`pt`", "`eta`", "`mass`"):
        assert name in message
    if suffix == ".h5":
        assert "`jets/pt`" in message
    if suffix == ".root":
        assert "tree `Events`" in message
    assert "did you mean `p_t` -> `pt`?" in message


# --- max_events -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", *WRITERS])
def test_max_events_flat(tmp_path: Path, suffix: str) -> None:
    flat = flat_events()
    path = WRITERS.get(suffix, write_npz)(tmp_path / f"data.{suffix.lstrip('.')}", flat, {})
    data = load(path, inputs={"jet": ["pt", "mass"]}, max_events=21)
    assert len(data) == 21 and data.inputs["jet"].shape == (21, 2)
    np.testing.assert_array_equal(data.labels, flat["y"][:21])
    np.testing.assert_array_equal(data.inputs["jet"][:, 1], flat["mass"][:21])


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_max_events_applies_before_padding(tmp_path: Path, suffix: str) -> None:
    flat, counts, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the long events (3 and 17) are beyond max_events
        data = load(path, inputs={"parts": ["c_pt"]}, masks={"mask": "parts"}, pad=8, max_events=3)
    assert data.inputs["parts"].shape == (3, 8, 1)
    np.testing.assert_array_equal(data.inputs["mask"].sum(axis=1), counts[:3])


def test_readers_read_only_max_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uproot

    flat, _, lists = jagged_events()
    stops: list[Any] = []
    original = uproot.TBranch.array

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        stops.append(kwargs.get("entry_stop"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(uproot.TBranch, "array", spy)
    load(write_root(tmp_path / "data.root", flat, lists), inputs={"p": "c_pt"}, pad=8, max_events=3)
    assert stops and set(stops) == {3}

    from robustcheck.data.parquet import read_parquet

    out = read_parquet(
        write_parquet(tmp_path / "data.parquet", flat, lists), ["c_pt", "y"], None, max_events=5
    )
    assert isinstance(out["c_pt"], Jagged) and len(out["c_pt"]) == 5 and len(out["y"]) == 5


# --- spec keys --------------------------------------------------------------------------------


def spec_doc(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {"path": "pkg.mod:factory"},
        "data": data,
        "inputs": {"parts": {"features": ["pt", "eta"], "mask": "mask"}},
        "envelope": {"parts": {"pt": {"relative": 0.05, "min": 0.0}, "eta": {"frozen": True}}},
        "attacks": {"pgd": {"method": "pgd", "epsilon": 1.0}},
        "checks": [{"type": "fooling_rate", "attack": "pgd", "max": 0.05}],
    }


def table(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "path": path.name,
        "tree": "Events",
        "labels": "y",
        "inputs": {"parts": ["c_pt", "c_eta"]},
        "masks": {"mask": "parts"},
        "pad": 16,
        **extra,
    }


def test_spec_keys_through_parse_spec(tmp_path: Path) -> None:
    flat, counts, lists = jagged_events()
    path = write_root(tmp_path / "data.root", flat, lists)
    spec = parse_spec(spec_doc({"nominal": table(path, truncate="error")}), tmp_path / "r.toml")
    data_spec = spec.data["nominal"]
    assert data_spec.inputs == {"parts": ("c_pt", "c_eta"), "mask": MaskOf("parts")}
    assert data_spec.masks == {"mask": "parts"}
    assert (data_spec.pad, data_spec.truncate, data_spec.tree) == (16, "error", "Events")
    assert spec.inputs["mask"].perturb is False and spec.inputs["parts"].mask == "mask"
    data = load_dataset(data_spec, spec.path)
    np.testing.assert_array_equal(data.inputs["mask"].sum(axis=1), counts)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"inputs": {"parts": 3}}, "must be a name or a non-empty list of names"),
        ({"inputs": {"parts": []}}, "must be a name or a non-empty list of names"),
        ({"inputs": {"parts": ["a", "a"]}}, r"lists \['a'\] more than once"),
        ({"masks": {"mask": "jets"}}, "`jets` is not a model input"),
        ({"inputs": {"parts": ["a"], "mask": "m"}}, "`mask` is both in inputs and in masks"),
        ({"truncate": "clip"}, "'clip' is not one of 'warn', 'error'"),
        ({"pad": 0}, "must be >= 1"),
    ],
)
def test_spec_key_errors(tmp_path: Path, extra: dict[str, Any], match: str) -> None:
    path = write_npz(tmp_path / "data.npz", flat_events(), {})
    with pytest.raises(SpecError, match=match):
        parse_spec(spec_doc({"nominal": table(path, **extra)}), tmp_path / "r.toml")


def test_mask_inputs_count_in_the_cross_sample_check(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "data.npz", flat_events(), {})
    alternative = {**table(path), "masks": {}}
    with pytest.raises(SpecError, match=r"inputs \['parts'\] differ .*\['mask', 'parts'\]"):
        parse_spec(
            spec_doc({"nominal": table(path), "alternative": alternative}), tmp_path / "r.toml"
        )
