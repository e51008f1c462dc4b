"""What a run keeps in memory: no stored per-entry sigma, compact per-event figures, and the
invariance statistics' entries in the inputs' own dtype (benchmarks/streaming_memory.py
measures the memory itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustcheck.core import SigmaOf, SpecRun, sigma_rows
from robustcheck.invariance_stats import real_entries, real_rows
from robustcheck.spec import parse_spec
from tests import particle_fixtures
from tests.particle_fixtures import particle_spec

particle_dir = particle_fixtures.particle_dir

PGD = {"pgd": {"method": "pgd", "epsilon": 1.0, "steps": 4, "random_start": False}}


@pytest.fixture(scope="module")
def attacked(particle_dir: Path) -> tuple[SpecRun, object]:
    run = SpecRun(parse_spec(particle_spec("pfn.pt", attacks=PGD), particle_dir / "r.toml"))
    return run, run.adversaries("pgd")


def test_sigma_is_computed_when_read_not_stored(attacked) -> None:  # type: ignore[no-untyped-def]
    run, adv = attacked
    assert isinstance(adv.sigma, SigmaOf)
    assert list(adv.sigma) == list(run.envelope.inputs)
    nominal = adv.nominal["parts"]
    full = run.envelope.inputs["parts"].sigma(nominal)
    assert torch.equal(adv.sigma["parts"], full)
    rows = torch.tensor([0, 3, 5])
    assert torch.equal(sigma_rows(adv.sigma, "parts", rows), full[rows])
    assert torch.equal(sigma_rows({"parts": full}, "parts", rows), full[rows])  # a plain dict


def test_per_event_figures_are_compact(attacked) -> None:  # type: ignore[no-untyped-def]
    _, adv = attacked
    assert adv.correct.dtype == torch.bool and adv.fooled.dtype == torch.bool
    assert adv.log_probs.dtype == torch.float32
    # the adversarial copy holds the perturbed inputs only; the mask is the nominal one
    assert adv.adversarial["mask"].data_ptr() == adv.nominal["mask"].data_ptr()


def test_real_entries_keep_the_dtype_and_the_values(attacked) -> None:  # type: ignore[no-untyped-def]
    _, adv = attacked
    x, real, f = adv.adversarial["parts"], adv.real["parts"], len(adv.features["parts"])
    expected = x.reshape(-1, f)[real.reshape(-1)].double().numpy()  # the former float64 copy
    entries = real_rows(x, real, f)
    assert entries.dtype == np.float32
    assert np.array_equal(entries.astype(np.float64), expected)
    events = np.array([7, 1, 4])
    picked = real_rows(x, real, f, events)
    assert np.array_equal(picked, x[events].reshape(-1, f)[real[events].reshape(-1)].numpy())
    nominal, perturbed = real_entries(adv, "parts")  # the report's: float64
    assert perturbed.dtype == np.float64 and np.array_equal(perturbed, expected)
    assert len(nominal) == len(perturbed)


def test_out_of_bounds_counts_block_by_block(attacked, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The sample is looked at a block of events at a time; the figures are those of the
    whole, whatever the block size."""
    from robustcheck import sanity

    run, adv = attacked
    env = run.envelope.inputs["parts"]
    column = int(torch.nonzero(torch.isfinite(env.lower) | torch.isfinite(env.upper))[0])
    parts = adv.nominal["parts"].clone()
    real = adv.nominal["mask"] != 0
    slots = torch.nonzero(real)[:: max(1, int(real.sum()) // 9)]
    below = bool(torch.isfinite(env.lower[column]))
    bound = float(env.lower[column] if below else env.upper[column])
    for k, (event, slot) in enumerate(slots.tolist()):
        parts[event, slot, column] = bound - 1 - k if below else bound + 1 + k
    inputs = {**adv.nominal, "parts": parts}
    monkeypatch.setattr(sanity, "EVENT_BLOCK", 10**9)
    whole = sanity.out_of_bounds(run.envelope, inputs)
    monkeypatch.setattr(sanity, "EVENT_BLOCK", 7)
    assert sanity.out_of_bounds(run.envelope, inputs) == whole
    count, extreme = whole[("parts", env.features[column])]
    assert count >= len(slots)
    assert extreme <= bound - len(slots) if below else extreme >= bound + len(slots)
