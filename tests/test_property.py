"""The ``property`` check: hypothesis finds, shrinks and reports a counterexample."""

from __future__ import annotations

import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis.database import InMemoryExampleDatabase

from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.result import CheckResult
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events, write_spec

STEP_AT = 0.3  # jet_eta where the step model's signal score jumps
TOY_GATES = ["auc", "accuracy"]  # sanity gates a probe model that is not a tagger skips
ETA_SIGMA = 0.05  # base_spec's absolute sigma of jet_eta


class StepModel(torch.nn.Module):
    """Signal logit jumps by 4 where jet_eta crosses STEP_AT; pt and mass add a tiny slope."""

    def __init__(self) -> None:
        super().__init__()
        self.step_at = STEP_AT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = 1e-4 * (x[:, 0] - 525.0) + 1e-4 * (x[:, 1] - 50.0)
        logit = 4.0 * (x[:, 2] > self.step_at).to(x.dtype) - 2.0 + slope
        return torch.stack((torch.zeros_like(logit), logit), dim=1)


class SmoothModel(torch.nn.Module):
    """A signal logit with tiny gradients: 1e-3 per GeV of mass and per unit of eta."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 1e-3 * (x[:, 1] - 50.0) + 1e-3 * x[:, 2]
        return torch.stack((torch.zeros_like(logit), logit), dim=1)


def save_scripted(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        torch.jit.save(torch.jit.script(module), str(path))


def build_folder(folder: Path, n_events: int = 600) -> dict[str, np.ndarray]:
    """Data, a step model and a smooth model (TorchScript) in ``folder``."""
    events = make_events(n_events, seed=3)
    np.savez(folder / "data.npz", **events)
    save_scripted(StepModel(), folder / "step.pt")
    save_scripted(SmoothModel(), folder / "smooth.pt")
    return events


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("property")
    build_folder(path)
    return path


@pytest.fixture(autouse=True)
def profile() -> Iterator[None]:
    """No example database unless a test loads its own profile; the previous one restored."""
    previous = settings.get_current_profile_name()
    settings.register_profile("robustcheck-tests", database=None)
    settings.load_profile("robustcheck-tests")
    yield
    settings.load_profile(previous)


def load_profile(**options: Any) -> None:
    settings.register_profile("robustcheck-tests-custom", database=None, **options)
    settings.load_profile("robustcheck-tests-custom")


def run_property(
    folder: Path, model: str, override: int | None = None, **check: Any
) -> CheckResult:
    """Run one property check; ``override`` is --robustcheck-seed."""
    doc = base_spec(model=model)
    doc["model"]["skip_gates"] = TOY_GATES  # the step model is a probe, not a tagger
    doc["checks"] = [{"name": "stable", "type": "property", "epsilon": 1.0, **check}]
    run = SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu", seed=override)
    return run.run_check(run.spec.checks[0])


def counterexample(result: CheckResult) -> dict[str, tuple[float, float, float]]:
    """feature -> (nominal, perturbed, sigma) from the failure's details."""
    found = {}
    for line in result.details:
        match = re.match(r"^  (\w+): (\S+) -> (\S+) \((\S+) sigma\)$", line)
        if match:
            found[match[1]] = (float(match[2]), float(match[3]), float(match[4]))
    return found


@pytest.mark.parametrize(
    "threshold", [{"max_score_change": 0.05}, {"decision_unchanged": True}], ids=str
)
def test_step_is_found_and_shrunk_to_that_feature(folder: Path, threshold: dict) -> None:
    result = run_property(folder, "step.pt", seed=0, **threshold)
    assert not result.passed
    changed = counterexample(result)
    assert list(changed) == ["jet_eta"], result.message()  # pt and mass shrunk away
    assert result.figures["counterexample_entries"] == 1
    before, after, pull = changed["jet_eta"]
    assert (before > STEP_AT) != (after > STEP_AT)  # the perturbation crosses the step
    assert abs(after - before) <= ETA_SIGMA * 1.0001
    assert pull == pytest.approx((after - before) / ETA_SIGMA, rel=1e-2, abs=1e-3)
    event = int(result.figures["counterexample_event"])
    x = np.load(folder / "data.npz")["x"]
    assert before == pytest.approx(float(x[event, 2]), rel=1e-5)
    # the score jump of the step model, computed here: sigmoid(+-2) swapped
    jump = 1 / (1 + np.exp(-2.0)) - 1 / (1 + np.exp(2.0))
    change = float(result.figures["counterexample_score_change"])
    assert abs(change) == pytest.approx(jump, abs=1e-3)
    assert f"event {event}" in result.summary and "hypothesis seed 0" in result.summary
    if "max_score_change" in threshold:
        assert "> max 0.05" in result.summary
    else:
        assert "decision of event" in result.summary


def test_same_seed_same_counterexample(folder: Path) -> None:
    first = run_property(folder, "step.pt", 11, max_score_change=0.05, seed=2)
    again = run_property(folder, "step.pt", 11, max_score_change=0.05, seed=2)
    assert first.message() == again.message()
    assert first.figures == again.figures
    assert first.figures["seed"] == 11 and "hypothesis seed 11" in first.summary
    spec_seed = run_property(folder, "step.pt", max_score_change=0.05, seed=4)
    assert spec_seed.figures["seed"] == 4 and "hypothesis seed 4" in spec_seed.summary


def test_smooth_model_passes(folder: Path) -> None:
    result = run_property(folder, "smooth.pt", max_score_change=0.01)
    assert result.passed, result.message()
    # |d p / d logit| <= 1/4 and the logit moves by at most 1e-3 * (5% of mass + 0.05)
    mass = np.load(folder / "data.npz")["x"][:, 1]
    bound = 0.25 * 1e-3 * (0.05 * float(mass.max()) + ETA_SIGMA)
    assert 0 < result.figures["largest_score_change"] <= bound * 1.001
    assert 0 < result.figures["examples"] <= 100  # the default profile's max_examples
    assert result.figures["n_events"] == 600


def test_max_events_limits_the_sample(folder: Path) -> None:
    result = run_property(folder, "smooth.pt", max_score_change=0.01, max_events=40)
    assert result.passed and result.figures["n_events"] == 40


def test_profile_max_examples_and_spec_override(folder: Path) -> None:
    load_profile(max_examples=7)
    assert run_property(folder, "smooth.pt", max_score_change=0.01).figures["examples"] <= 7
    more = run_property(folder, "smooth.pt", max_score_change=0.01, max_examples=25)
    assert 7 < more.figures["examples"] <= 25


def test_failures_go_to_the_example_database(folder: Path) -> None:
    database = InMemoryExampleDatabase()
    # explicit: under CI=true hypothesis's own "ci" profile (the parent) derandomizes
    settings.register_profile("robustcheck-tests-db", database=database, derandomize=False)
    settings.load_profile("robustcheck-tests-db")
    first = run_property(folder, "step.pt", max_score_change=0.05)  # unseeded: database on
    assert database.data, "the shrunk counterexample was not saved"
    assert "replayed from its example database" in first.summary
    again = run_property(folder, "step.pt", max_score_change=0.05)
    assert again.summary == first.summary  # the saved counterexample, replayed

    def search(result: CheckResult) -> list[str]:  # but the count of examples evaluated
        return [line for line in result.details if "perturbations evaluated" not in line]

    assert search(again) == search(first)
    assert again.figures["examples"] < first.figures["examples"]
    database.data.clear()
    run_property(folder, "step.pt", max_score_change=0.05, seed=1)
    assert not database.data  # a seeded search is reproducible by itself: hypothesis skips it


def test_a_deadline_the_profile_sets_is_kept(folder: Path) -> None:
    load_profile(deadline=timedelta(microseconds=1))
    with pytest.raises(SpecError, match="deadline") as info:
        run_property(folder, "smooth.pt", max_score_change=0.01)
    assert "checks[0].max_events" in str(info.value)


def test_a_check_that_could_never_fail_is_refused(folder: Path) -> None:
    doc = base_spec(model="smooth.pt")
    doc["checks"] = [{"type": "property", "epsilon": 1.0}]
    with pytest.raises(SpecError, match="sets no threshold"):
        parse_spec(doc, folder / "robustness.toml")
    with pytest.raises(SpecError, match="nothing could fail"):
        run_property(folder, "smooth.pt", decision_unchanged=False)


class ParticleStepModel(torch.nn.Module):
    """Signal when the summed ptrel of the real particles passes 1.5; padding would count big."""

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (parts[:, :, 0] * mask).sum(dim=1) + 100.0 * (parts[:, :, 0] * (1 - mask)).sum(1)
        logit = 4.0 * (total > 1.5).to(parts.dtype) - 2.0
        return torch.stack((torch.zeros_like(logit), logit), dim=1)


def test_particle_counterexample_leaves_padding_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n, particles = 300, 4
    parts = rng.uniform(0.2, 0.6, (n, particles, 2)).astype(np.float32)
    mask = (rng.uniform(size=(n, particles)) < 0.7).astype(np.float32)
    parts[mask == 0] = 0.0
    labels = ((parts[:, :, 0] * mask).sum(1) > 1.5).astype(np.int64)
    np.savez(tmp_path / "jets.npz", parts=parts, mask=mask, y=labels)
    save_scripted(ParticleStepModel(), tmp_path / "particles.pt")
    doc = {
        "model": {"path": "particles.pt"},
        "data": {
            "nominal": {
                "path": "jets.npz",
                "labels": "y",
                "inputs": {"parts": "parts", "mask": "mask"},
            }
        },
        "inputs": {"parts": {"features": ["ptrel", "deta"], "mask": "mask"}},
        "envelope": {"parts": {"ptrel": {"relative": 0.05, "min": 0.0}, "deta": {"absolute": 0.1}}},
        "checks": [{"type": "property", "epsilon": 1.0, "decision_unchanged": True, "seed": 0}],
    }
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    result = run.run_check(run.spec.checks[0])
    assert not result.passed
    event = int(result.figures["counterexample_event"])
    lines = [line for line in result.details if re.match(r"^  ptrel\[\d\]: ", line)]
    assert lines and len(lines) == result.figures["counterexample_entries"]
    for line in lines:
        particle = int(line.split("[")[1].split("]")[0])
        assert mask[event, particle] == 1, line  # only real particles move
    assert not any("deta" in line for line in result.details)  # shrunk away


def test_through_pytest_with_a_hypothesis_profile(pytester: pytest.Pytester, folder: Path) -> None:
    for name in ("step.pt", "data.npz"):
        shutil.copy(folder / name, pytester.path / name)
    doc = base_spec(model="step.pt")
    doc["model"]["skip_gates"] = TOY_GATES
    doc["checks"] = [
        {"name": "step", "type": "property", "epsilon": 1.0, "max_score_change": 0.05},
        {"name": "loose", "type": "property", "epsilon": 1.0, "max_score_change": 1.0},
    ]
    write_spec(pytester.path, doc)
    pytester.makeconftest(
        "from hypothesis import settings\n"
        "settings.register_profile('tiny', max_examples=5, database=None)\n"
    )
    result = pytester.runpytest(
        "--robustcheck", "--robustcheck-seed=3", "--hypothesis-profile=tiny", "--junitxml=out.xml"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*signal probability of event * moves by * > max 0.05 under a perturbation within "
            "1 sigma * | hypothesis seed 3",
            "*shrunk counterexample, event * of the nominal sample:",
            "*  jet_eta: * -> * (* sigma)",
        ]
    )
    tree = ET.parse(pytester.path / "out.xml")
    loose = next(case for case in tree.iter("testcase") if case.get("name") == "loose")
    figures = {p.get("name"): p.get("value") for p in loose.iter("property")}
    assert int(figures["examples"]) <= 5  # the profile's max_examples
