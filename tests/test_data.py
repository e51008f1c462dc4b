"""Data loading: shapes, NaNs, labels and event counts are checked with clear messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robustcheck.core import SpecRun
from robustcheck.errors import DataError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events


def run_on(tmp_path: Path, model_dir: Path, **arrays: np.ndarray) -> SpecRun:
    data = dict(np.load(model_dir / "data.npz"))
    data.update(arrays)
    np.savez(tmp_path / "data.npz", **data)
    (tmp_path / "tagger.pt").write_bytes((model_dir / "tagger.pt").read_bytes())
    return SpecRun(parse_spec(base_spec(), tmp_path / "robustness.toml"), device="cpu")


def data_error(run: SpecRun) -> str:
    with pytest.raises(DataError) as info:
        run.log_probs()
    return str(info.value)


def test_nan_is_reported_with_its_position(tmp_path: Path, model_dir: Path) -> None:
    x = np.load(model_dir / "data.npz")["x"].copy()
    x[17, 1] = np.nan
    x[20, 0] = np.inf
    message = data_error(run_on(tmp_path, model_dir, x=x))
    assert (
        "data.npz: data.nominal: array `x` holds 2 NaN/inf value(s), first at index (17, 1)"
        in message
    )
    assert "fix:" in message


def test_feature_count_must_match_spec(tmp_path: Path, model_dir: Path) -> None:
    x = np.load(model_dir / "data.npz")["x"]
    message = data_error(run_on(tmp_path, model_dir, x=np.concatenate([x, x[:, :1]], 1)))
    assert "input `x` has shape (3000, 5), but [inputs.x] names 4 features" in message


def test_event_counts_and_labels(tmp_path: Path, model_dir: Path) -> None:
    y = np.load(model_dir / "data.npz")["y"]
    assert "different event counts" in data_error(run_on(tmp_path, model_dir, y=y[:-1]))
    assert "non-negative integers" in data_error(run_on(tmp_path, model_dir, y=y - 0.5))
    onehot = np.eye(2)[y]
    assert "one integer per event" in data_error(run_on(tmp_path, model_dir, y=onehot))


def test_missing_array_lists_what_exists(tmp_path: Path, model_dir: Path) -> None:
    run = run_on(tmp_path, model_dir)
    doc = base_spec()
    doc["data"]["nominal"]["labels"] = "label"
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    message = data_error(run)
    assert "no array(s) ['label'] in the file; it holds ['x', 'y']" in message


def test_max_events_and_structured_npy(tmp_path: Path, model_dir: Path) -> None:
    data = np.load(model_dir / "data.npz")
    table = np.zeros(len(data["y"]), dtype=[("x", "f4", (4,)), ("y", "i8")])
    table["x"], table["y"] = data["x"], data["y"]
    np.save(tmp_path / "table.npy", table)
    (tmp_path / "tagger.pt").write_bytes((model_dir / "tagger.pt").read_bytes())
    doc = base_spec()
    doc["data"]["nominal"].update(path="table.npy", max_events=500)
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    inputs, labels = run.inputs()
    assert inputs["x"].shape == (500, 4) and labels.shape == (500,)
    assert np.array_equal(inputs["x"].numpy(), data["x"][:500])


def test_labels_beyond_the_model_classes(tmp_path: Path, model_dir: Path) -> None:
    events = make_events(200, seed=5)
    events["y"][3] = 2
    np.savez(tmp_path / "data.npz", **events)
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    run = SpecRun(parse_spec(base_spec(), tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(DataError, match="labels go up to 2, but the model gives 2 classes"):
        run.log_probs()


def test_a_sample_with_one_class_has_no_auc(tmp_path: Path, model_dir: Path) -> None:
    events = make_events(300, seed=6)
    np.savez(tmp_path / "data.npz", **events)
    only_signal = {k: v[events["y"] == 1] for k, v in events.items()}
    np.savez(tmp_path / "alt.npz", **only_signal)
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    doc = base_spec()
    doc["data"]["alternative"] = {"path": "alt.npz", "labels": "y", "inputs": {"x": "x"}}
    doc["checks"] = [{"type": "resilience", "max_auc_change_percent": 1.0}]
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(DataError, match="the alternative sample has no background events"):
        run.run()
