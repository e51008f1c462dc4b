"""Loss surfaces and the loss_surface check against closed forms on linear taggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.loss_surface import compare_loss_surfaces, loss_surface_of_run
from robustcheck.spec import parse_spec

WEIGHTS = np.array([[0.3, -0.8, 0.5], [-0.4, 1.1, -0.2]], dtype=np.float32)
BIAS = np.array([0.1, -0.3], dtype=np.float32)
ENVELOPE = {
    "f0": {"absolute": 0.5},
    "f1": {"relative": 0.1, "min": 0.0, "max": 3.0},
    "f2": {"frozen": True},
}


class Linear(torch.nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.layer.weight.copy_(torch.from_numpy(WEIGHTS * scale))
            self.layer.bias.copy_(torch.from_numpy(BIAS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class LinearSet(torch.nn.Module):
    """A linear deep set: logit = sum over real particles of a . x_p, plus a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([0.7, -1.3]))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = ((parts @ self.a) * mask).sum(1) - 0.5
        return torch.stack((torch.zeros_like(z), z), dim=1)


def events(n: int = 400, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.stack(
        [rng.normal(0, 1, n), rng.uniform(0.0, 3.0, n), rng.normal(0, 1, n)], axis=1
    ).astype(np.float32)
    x[:20, 1] = 3.0  # at the upper bound: clamped on the way up
    return {"x": x, "y": rng.integers(0, 2, n)}


def save(model: torch.nn.Module, path: Path) -> None:
    torch.jit.save(torch.jit.script(model), str(path))


# the toy models here shape a loss surface; they are not taggers, so the performance gates are off
TOY_MODEL = {"skip_gates": ["auc", "accuracy"]}


def linear_spec(folder: Path, model: str = "linear.pt", **check: Any) -> SpecRun:
    doc = {
        "version": 1,
        "model": {"path": model, **TOY_MODEL},
        "data": {"nominal": {"path": "data.npz", "labels": "y", "inputs": {"x": "x"}}},
        "inputs": {"x": {"features": ["f0", "f1", "f2"]}},
        "envelope": {"x": ENVELOPE},
        "checks": [{"type": "loss_surface", "max_loss_increase": 0.05, **check}],
    }
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loss_surface")
    np.savez(path / "data.npz", **events())
    save(Linear(), path / "linear.pt")
    save(Linear(scale=0.3), path / "flat.pt")
    return path


def moved(x: np.ndarray, column: int, t: np.ndarray) -> np.ndarray:
    """x with one column moved by t sigma (broadcast over t), clamped like the box."""
    entry = ENVELOPE[f"f{column}"]
    value = x[:, column].astype(np.float64)
    sigma = np.hypot(entry.get("absolute", 0.0), entry.get("relative", 0.0) * np.abs(value))
    lo = np.minimum(entry.get("min", -np.inf), value)
    hi = np.maximum(entry.get("max", np.inf), value)
    out = np.repeat(x[None].astype(np.float64), len(t), axis=0)
    out[:, :, column] = np.clip(value + t[:, None] * sigma, lo, hi)
    return out


def mean_loss(x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Mean cross-entropy of the linear model over the event axis (the second-to-last)."""
    z = x @ (WEIGHTS.astype(np.float64) * scale).T + BIAS
    index = np.broadcast_to(y, z.shape[:-1])[..., None]
    nll = logsumexp(z, axis=-1) - np.take_along_axis(z, index, axis=-1)[..., 0]
    return nll.mean(axis=-1)


def test_profiles_match_the_closed_form(folder: Path) -> None:
    data = events()
    surface = loss_surface_of_run(linear_spec(folder), epsilon=2.0, points=7)
    t = np.linspace(-2.0, 2.0, 7)
    assert surface.features == ["f0", "f1"]  # the frozen feature has no axis
    np.testing.assert_allclose(surface.offsets, t)
    for k, column in enumerate((0, 1)):
        expected = mean_loss(moved(data["x"], column, t), data["y"])
        np.testing.assert_allclose(surface.profiles[k], expected, rtol=1e-5)
    assert surface.nominal == pytest.approx(mean_loss(data["x"], data["y"]), rel=1e-6)
    rises = [mean_loss(moved(data["x"], c, t), data["y"]).max() - surface.nominal for c in (0, 1)]
    np.testing.assert_allclose(surface.increase(), rises, rtol=1e-4, atol=1e-7)
    name, rise, _ = surface.sharpest()
    assert name == ["f0", "f1"][int(np.argmax(rises))] and rise == pytest.approx(max(rises))


def test_grid_and_discriminant_match_the_closed_form(folder: Path) -> None:
    data = events()
    run = linear_spec(folder)
    t = np.linspace(-1.0, 1.0, 5)
    surface = loss_surface_of_run(run, epsilon=1.0, points=5, grid=["f1", "f0"], max_events=150)
    x, y = data["x"][:150], data["y"][:150]
    expected = np.empty((5, 5))
    for i, ti in enumerate(t):
        first = moved(x, 1, np.array([ti]))[0]
        expected[i] = mean_loss(moved(first, 0, t), y)
    assert surface.grid_features == ("f1", "f0") and surface.n_events == 150
    np.testing.assert_allclose(surface.grid, expected, rtol=1e-5)
    score = loss_surface_of_run(run, epsilon=1.0, points=5, quantity="discriminant")
    z = moved(data["x"], 0, t) @ WEIGHTS.T.astype(np.float64) + BIAS
    signal = 1.0 / (1.0 + np.exp(z[..., 0] - z[..., 1]))
    np.testing.assert_allclose(score.profile("f0"), signal.mean(axis=1), rtol=1e-5)


def test_masked_particles_move_only_where_real(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    parts = rng.normal(1.0, 0.5, (200, 6, 2)).astype(np.float32)
    mask = (rng.uniform(size=(200, 6)) < 0.7).astype(np.float32)
    y = rng.integers(0, 2, 200)
    np.savez(tmp_path / "data.npz", parts=parts, mask=mask, y=y)
    save(LinearSet(), tmp_path / "set.pt")
    doc = {
        "version": 1,
        "model": {"path": "set.pt", **TOY_MODEL},
        "data": {
            "nominal": {
                "path": "data.npz",
                "labels": "y",
                "inputs": {"parts": "parts", "mask": "mask"},
            }
        },
        "inputs": {"parts": {"features": ["a", "b"], "mask": "mask"}},
        "envelope": {"parts": {"a": {"relative": 0.2}, "b": {"absolute": 0.1}}},
        "checks": [{"type": "loss_surface", "max_loss_increase": 1.0}],
    }
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    surface = loss_surface_of_run(run, epsilon=1.5, points=4)
    t = np.linspace(-1.5, 1.5, 4)
    a = np.array([0.7, -1.3])
    for column, sigma in ((0, 0.2 * np.abs(parts[..., 0])), (1, np.full(parts.shape[:2], 0.1))):
        z0 = ((parts @ a) * mask).sum(1) - 0.5
        z = z0 + t[:, None] * a[column] * (sigma * mask).sum(1)
        sign = 2 * y - 1
        expected = np.logaddexp(0.0, -sign * z).mean(axis=1)  # -log sigmoid(+-z)
        np.testing.assert_allclose(surface.profiles[column], expected, rtol=1e-5)


def test_check_bounds_the_largest_rise(folder: Path) -> None:
    run = linear_spec(folder)
    surface = loss_surface_of_run(run, epsilon=1.0, points=9)
    feature, rise, offset = surface.sharpest()
    for limit, passed in ((rise * 0.99, False), (rise * 1.01, True)):
        check = linear_spec(folder, max_loss_increase=limit)
        result = check.run_check(check.spec.checks[0])
        assert result.passed is passed
        assert result.figures["loss_increase"] == pytest.approx(rise)
        assert result.figures["sharpest_feature"] == feature
        assert f"{feature} at {offset:+.3g} sigma" in result.summary
        assert any(line.startswith(feature) for line in result.details[1:])
        assert result.headline() == (f"max loss increase {rise:.3g}", f"<= {limit:g}")


def test_grid_rise_counts_in_the_check(folder: Path) -> None:
    run = linear_spec(folder, grid=["f0", "f1"], points=5)
    result = run.run_check(run.spec.checks[0])
    surface = loss_surface_of_run(run, epsilon=1.0, points=5, grid=["f0", "f1"])
    assert result.figures["grid_max_increase"] == pytest.approx(surface.grid_increase())
    assert surface.grid_increase() >= surface.increase().max() - 1e-9  # the grid holds the axes
    assert result.figures["loss_increase"] == pytest.approx(surface.grid_increase())


def test_two_models_side_by_side(folder: Path) -> None:
    sharp, flat = compare_loss_surfaces(
        linear_spec(folder), linear_spec(folder, model="flat.pt"), epsilon=1.0, points=5
    )
    data = events()
    t = np.linspace(-1.0, 1.0, 5)
    expected = mean_loss(moved(data["x"], 0, t), data["y"], scale=0.3)
    np.testing.assert_allclose(flat.profile("f0"), expected, rtol=1e-5)
    assert sharp.features == flat.features
    assert flat.increase().max() < sharp.increase().max()  # smaller weights, flatter surface


def test_frozen_grid_feature_is_a_spec_error(folder: Path) -> None:
    run = linear_spec(folder, grid=["f0", "f2"])
    with pytest.raises(SpecError) as err:
        run.run_check(run.spec.checks[0])
    text = str(err.value)
    assert "robustness.toml" in text and "checks[0].grid" in text and "frozen" in text
    assert "f0, f1" in text
    with pytest.raises(SpecError, match="two different features"):
        loss_surface_of_run(run, grid=["f0", "f0"])
    with pytest.raises(SpecError, match="not a perturbed feature"):
        loss_surface_of_run(run, features=["nope"])


def test_spec_requires_a_threshold(folder: Path) -> None:
    doc = {
        "version": 1,
        "model": {"path": "linear.pt"},
        "data": {"nominal": {"path": "data.npz", "labels": "y", "inputs": {"x": "x"}}},
        "inputs": {"x": {"features": ["f0", "f1", "f2"]}},
        "envelope": {"x": ENVELOPE},
        "checks": [{"type": "loss_surface", "max_loss_increase": 0.1, "points": 1}],
    }
    with pytest.raises(SpecError, match="points"):
        parse_spec(doc, folder / "robustness.toml")
    doc["checks"] = [{"type": "loss_surface"}]
    with pytest.raises(SpecError, match="max_loss_increase"):
        parse_spec(doc, folder / "robustness.toml")
