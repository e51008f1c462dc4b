"""Hypothesis strategies over the envelope: always inside it, and shrinking to "no change"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustcheck.envelope import Envelope, InputEnvelope
from robustcheck.errors import DataError, SpecError
from robustcheck.spec import FeatureEnvelope
from robustcheck.strategies import from_spec, perturbations, search
from tests.conftest import base_spec, make_events, write_spec

PARTICLES = 3


def entry(**options: object) -> FeatureEnvelope:
    values: dict[str, object] = {
        "absolute": None,
        "relative": None,
        "min": None,
        "max": None,
        "frozen": False,
        "integer": False,
        "default": None,
    }
    values.update(options)
    return FeatureEnvelope(**values)  # type: ignore[arg-type]


JETS = {
    "pt": entry(relative=0.02, min=0.0),
    "mass": entry(relative=0.05, absolute=0.5, min=0.0),
    "eta": entry(absolute=0.05, min=-2.5, max=2.5),
    "n_const": entry(frozen=True),
    "n_b": entry(integer=True),  # no sigma: never moves (tests/test_discrete.py moves one)
    "dr": entry(absolute=0.1, min=0.0, default=-999.0),
}
PARTS = {"ptrel": entry(relative=0.1, min=0.0, max=1.0), "dphi": entry(absolute=0.01)}
ENVELOPE = Envelope(
    {
        "jets": InputEnvelope.from_features("jets", JETS),
        "parts": InputEnvelope.from_features("parts", PARTS, mask="mask"),
    }
)


def columns(spec: dict[str, FeatureEnvelope], key: str, fill: float) -> np.ndarray:
    return np.array([fill if getattr(e, key) is None else getattr(e, key) for e in spec.values()])


def sigma(spec: dict[str, FeatureEnvelope], x: np.ndarray) -> np.ndarray:
    """Sigma of each entry, computed here from the definitions (not by the package)."""
    absolute, relative = columns(spec, "absolute", 0.0), columns(spec, "relative", 0.0)
    return np.sqrt(absolute**2 + (relative * np.abs(x.astype(np.float64))) ** 2)


@st.composite
def nominal_samples(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A few events with values inside the bounds, placeholders and padded particles."""
    n = draw(st.integers(1, 4))
    low = np.array([0.0, 0.0, -2.5, 0.0, 0.0, 0.0])
    high = np.array([1000.0, 300.0, 2.5, 80.0, 4.0, 1.0])
    unit = draw(arrays(np.float64, (n, len(JETS)), elements=st.floats(0, 1)))
    jets = (low + unit * (high - low)).astype(np.float32)
    jets[:, 3:5] = np.round(jets[:, 3:5])
    placeholder = draw(arrays(np.bool_, n))
    jets[placeholder, 5] = -999.0
    parts = draw(
        arrays(
            np.float32,
            (n, PARTICLES, len(PARTS)),
            elements=st.floats(0, 1, width=32),
        )
    )
    mask = draw(arrays(np.bool_, (n, PARTICLES))).astype(np.float32)
    return {"jets": jets, "parts": parts, "mask": mask}


def assert_inside(nominal: dict[str, np.ndarray], moved: dict[str, np.ndarray], eps: float):
    assert set(moved) == set(nominal)
    assert moved["mask"] is nominal["mask"]
    for name, spec in (("jets", JETS), ("parts", PARTS)):
        x, y = nominal[name], moved[name]
        assert isinstance(y, np.ndarray) and y.dtype == x.dtype and y.shape == x.shape
        shift = np.abs(y.astype(np.float64) - x)
        ulp = np.spacing(np.abs(x))  # the box's edges are float32 numbers too
        assert (shift <= eps * sigma(spec, x) * (1 + 1e-6) + ulp).all()
        unmoved = y == x  # placeholders may sit outside the bounds; nothing moves them there
        assert ((y >= columns(spec, "min", -np.inf)) | unmoved).all()
        assert ((y <= columns(spec, "max", np.inf)) | unmoved).all()
    jets, moved_jets = nominal["jets"], moved["jets"]
    # frozen features, integer ones without sigma and placeholders never move: bit for bit
    np.testing.assert_array_equal(moved_jets[:, 3:5], jets[:, 3:5])
    placeholder = jets[:, 5] == -999.0
    np.testing.assert_array_equal(moved_jets[placeholder, 5], jets[placeholder, 5])
    padding = nominal["mask"] == 0
    np.testing.assert_array_equal(moved["parts"][padding], nominal["parts"][padding])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    nominal=nominal_samples(),
    eps=st.floats(0, 3),
    coherent=st.booleans(),
)
def test_perturbations_stay_in_the_envelope(
    data: st.DataObject, nominal: dict[str, np.ndarray], eps: float, coherent: bool
) -> None:
    moved = data.draw(perturbations(ENVELOPE, nominal, eps, coherent=coherent))
    assert_inside(nominal, moved, eps)


def test_shrinking_reaches_the_box_edge() -> None:
    nominal = {
        "jets": np.array([[500.0, 50.0, 0.0, 20.0, 1.0, 0.5]], np.float32),
        "parts": np.full((1, PARTICLES, 2), 0.5, np.float32),
        "mask": np.ones((1, PARTICLES), np.float32),
    }
    strategy = perturbations(ENVELOPE, nominal, 1.0)
    up = find(strategy, lambda p: p["jets"][0, 0] > 505.0, settings=settings(database=None))
    assert up["jets"][0, 0] == 510.0  # shrunk to the simplest pull, 1: the edge, 2% of 500


def test_shrinks_to_no_change() -> None:
    nominal = {
        "jets": np.array([[500.0, 50.0, 0.3, 20.0, 1.0, 0.5], [80.0, 9.0, -1.0, 5.0, 0.0, -999.0]]),
        "parts": np.full((2, PARTICLES, 2), 0.25, np.float32),
        "mask": np.array([[1, 1, 0], [1, 0, 0]], np.float32),
    }
    strategy = perturbations(ENVELOPE, nominal, 2.0)
    smallest = find(strategy, lambda p: True, settings=settings(database=None))
    for name in nominal:
        np.testing.assert_array_equal(smallest[name], nominal[name])


@pytest.fixture
def no_database() -> Iterator[None]:
    """A hypothesis profile without the example database, for this test only."""
    previous = settings.get_current_profile_name()
    settings.register_profile("robustcheck-no-database", database=None)
    settings.load_profile("robustcheck-no-database")
    yield
    settings.load_profile(previous)


def test_counterexample_keeps_only_the_entries_it_needs(no_database: None) -> None:
    events = make_events(3, seed=4)
    nominal = {
        "jets": np.concatenate([events["x"][:, :3], np.zeros((3, 3), np.float32)], axis=1),
        "parts": np.full((3, PARTICLES, 2), 0.5, np.float32),
        "mask": np.ones((3, PARTICLES), np.float32),
    }
    mass = nominal["jets"][1, 1]
    half_sigma = 0.5 * float(sigma(JETS, nominal["jets"][1])[1])

    def fails(p: dict[str, np.ndarray]) -> bool:
        return bool(p["jets"][1, 1] - mass > half_sigma)

    found = search(perturbations(ENVELOPE, nominal, 1.0), fails, seed=3)
    assert found.example is not None and found.seed == 3
    changed = [
        (name, tuple(index))
        for name in ("jets", "parts")
        for index in np.argwhere(found.example[name] != nominal[name])
    ]
    assert changed == [("jets", (1, 1))]
    again = search(perturbations(ENVELOPE, nominal, 1.0), fails, seed=3)
    np.testing.assert_array_equal(again.example["jets"], found.example["jets"])


def test_coherent_pattern_is_shared_by_every_event() -> None:
    nominal = {
        "jets": np.tile(np.array([[500.0, 50.0, 0.0, 20.0, 1.0, 0.5]], np.float32), (5, 1)),
        "parts": np.full((5, PARTICLES, 2), 0.5, np.float32),
        "mask": np.ones((5, PARTICLES), np.float32),
    }
    nominal["jets"][:, 0] *= np.arange(1, 6, dtype=np.float32)  # relative sigma differs per event
    moved = find(
        perturbations(ENVELOPE, nominal, 1.0, coherent=True),
        lambda p: bool((p["jets"][:, 0] != nominal["jets"][:, 0]).any()),
        settings=settings(database=None),
    )
    pulls = (moved["jets"][:, 0] - nominal["jets"][:, 0]) / (0.02 * nominal["jets"][:, 0])
    np.testing.assert_allclose(pulls, pulls[0], rtol=1e-4)
    assert pulls[0] != 0


def test_torch_inputs_come_back_as_tensors() -> None:
    nominal = {
        "jets": torch.tensor([[500.0, 50.0, 0.0, 20.0, 1.0, -999.0]]),
        "parts": torch.full((1, PARTICLES, 2), 0.5),
        "mask": torch.tensor([[1.0, 0.0, 1.0]]),
    }
    moved = find(
        perturbations(ENVELOPE, nominal, 1.0),
        lambda p: bool(
            (p["parts"] != nominal["parts"]).any() and (p["jets"] != nominal["jets"]).any()
        ),
        settings=settings(database=None),
    )
    assert all(isinstance(value, torch.Tensor) for value in moved.values())
    assert torch.equal(moved["parts"][0, 1], nominal["parts"][0, 1])
    assert moved["jets"][0, 5] == -999.0


def test_clear_errors() -> None:
    nominal = {
        "jets": np.zeros((2, len(JETS)), np.float32),
        "parts": np.zeros((2, PARTICLES, 2), np.float32),
    }
    with pytest.raises(DataError, match="no `mask` \\(the mask of `parts`\\)"):
        perturbations(ENVELOPE, nominal, 1.0)
    nominal["mask"] = np.ones((2, PARTICLES), np.float32)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        perturbations(ENVELOPE, nominal, -1.0)
    nominal["jets"] = np.zeros((2, 3), np.float32)
    with pytest.raises(DataError, match="names 6 features along the last axis"):
        perturbations(ENVELOPE, nominal, 1.0)


def test_from_spec_draws_around_the_spec_sample(tmp_path: Path) -> None:
    events = make_events(50, seed=5)
    np.savez(tmp_path / "data.npz", **events)
    (tmp_path / "tagger.pt").write_bytes(b"")  # never loaded: only data and envelope are read
    path = write_spec(tmp_path, base_spec())
    sample = from_spec(path, epsilon=1.5, max_events=6)
    np.testing.assert_array_equal(sample.nominal["x"], events["x"][:6])
    np.testing.assert_array_equal(sample.labels, events["y"][:6])
    eta_sigma = 0.05

    @settings(max_examples=30, database=None)
    @given(sample.perturbations())
    def check(moved: dict[str, np.ndarray]) -> None:
        shift = moved["x"] - sample.nominal["x"]
        assert (np.abs(shift[:, 0]) <= 1.5 * 0.02 * sample.nominal["x"][:, 0] * 1.00001).all()
        assert (np.abs(shift[:, 2]) <= 1.5 * eta_sigma * 1.00001).all()
        np.testing.assert_array_equal(shift[:, 3], 0)  # n_const is frozen in base_spec

    check()
    with pytest.raises(SpecError, match="no sample named 'herwig'"):
        from_spec(path, epsilon=1.0, sample="herwig")


def test_correlated_groups_bound_the_draws(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **make_events(20, seed=6))
    (tmp_path / "tagger.pt").write_bytes(b"")
    covariance = np.array([[9.0, 0.09], [0.09, 0.0025]])  # jet_mass and jet_eta, rho = 0.6
    doc = base_spec()
    doc["envelope"]["x"]["jet_mass"] = {"min": 0.0}  # sigmas from the covariance
    doc["envelope"]["x"]["jet_eta"] = {"min": -2.5, "max": 2.5}
    doc["envelope"]["x"]["groups"] = [
        {"features": ["jet_mass", "jet_eta"], "covariance": covariance.tolist()}
    ]
    sample = from_spec(write_spec(tmp_path, doc), epsilon=1.0, max_events=5)
    inverse = np.linalg.inv(covariance)
    longest = []

    @settings(max_examples=40, database=None)
    @given(sample.perturbations())
    def check(moved: dict[str, np.ndarray]) -> None:
        delta = (moved["x"] - sample.nominal["x"])[:, 1:3].astype(np.float64)
        length2 = np.einsum("ni,ij,nj->n", delta, inverse, delta)
        assert (length2 <= 1.0 + 1e-4).all()
        longest.append(length2.max())

    check()
    assert max(longest) > 0.5  # the draws do reach out towards the ball's surface


def _jes_sample(tmp_path: Path, epsilon: float = 2.0):
    np.savez(tmp_path / "data.npz", **make_events(12, seed=8))
    (tmp_path / "tagger.pt").write_bytes(b"")
    doc = base_spec()
    doc["envelope"]["x"]["groups"] = [
        {"name": "jes", "features": ["jet_pt", "jet_mass"], "coherent": True, "relative": 0.02}
    ]
    return from_spec(write_spec(tmp_path, doc), epsilon=epsilon, max_events=12)


def test_group_shifts_move_the_group_by_one_factor(tmp_path: Path) -> None:
    sample = _jes_sample(tmp_path)
    nominal = sample.nominal["x"].astype(np.float64)

    @settings(max_examples=40, database=None)
    @given(sample.shifts(), sample.shifts(per_event=True))
    def check(shared: dict[str, np.ndarray], per_event: dict[str, np.ndarray]) -> None:
        for moved, one_factor in ((shared, True), (per_event, False)):
            ratio = moved["x"][:, :2].astype(np.float64) / nominal[:, :2]
            assert np.allclose(ratio[:, 0], ratio[:, 1], rtol=1e-6)  # pt and mass together
            assert (np.abs(ratio - 1) <= 2.0 * 0.02 + 1e-6).all()  # within epsilon sigma
            if one_factor:
                assert np.allclose(ratio[:, 0], ratio[0, 0], rtol=1e-6)
            assert np.array_equal(moved["x"][:, 2:], sample.nominal["x"][:, 2:])

    check()


def test_group_shifts_shrink_to_the_smallest_variation(tmp_path: Path) -> None:
    sample = _jes_sample(tmp_path)
    nominal = sample.nominal["x"][:, 0].astype(np.float64)
    found = find(
        sample.shifts(),
        lambda m: (m["x"][:, 0] / nominal).min() > 1.01,
        settings=settings(database=None, max_examples=500),
    )
    ratio = float((found["x"][:, 0] / nominal).min())
    # shrunk from anywhere up to 2 sigma (ratio 1.04) to a simple shift of at most 1 sigma
    assert 1.01 < ratio <= 1.02 + 1e-6


def test_group_shifts_need_a_coherent_group(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **make_events(5, seed=9))
    (tmp_path / "tagger.pt").write_bytes(b"")
    sample = from_spec(write_spec(tmp_path, base_spec()), epsilon=1.0, max_events=5)
    with pytest.raises(SpecError, match="no coherent groups"):
        sample.shifts()
