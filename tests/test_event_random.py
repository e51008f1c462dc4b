"""Per-event random streams: their statistics, and the same figures however a run is split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from robustcheck.attacks.base import AttackBatch
from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.event_random import EventRandom, mix, stream_key
from robustcheck.spec import parse_spec
from robustcheck.stream import Chunk, Reservoir
from tests.conftest import base_spec

# --- the streams -----------------------------------------------------------------------------


def test_mix_is_lowbias32_in_python_and_torch() -> None:
    """The int64 tensor arithmetic equals the 32-bit reference (multiplication modulo 2^32)."""

    def reference(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    values += np.random.default_rng(0).integers(0, 2**32, 200).tolist()
    mixed = mix(torch.tensor(values, dtype=torch.int64)).tolist()
    assert mixed == [reference(v) for v in values] == [mix(v) for v in values]
    # a bijection: no two of many inputs collide
    assert len(set(mix(torch.arange(200_000)).tolist())) == 200_000


def test_uniform_numbers_pass_ks_and_pair_tests() -> None:
    streams = EventRandom.of(3, "pgd", torch.arange(50_000))
    u = streams.uniform((50_000, 4)).double().numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    # neighbouring events, neighbouring positions and consecutive draws are independent:
    # counts of (first, second) in a 10 x 10 grid follow the uniform table
    second = streams.uniform((50_000, 4)).double().numpy()
    for a, b in ((u[:-1, 0], u[1:, 0]), (u[:, 0], u[:, 1]), (u[:, 2], second[:, 2])):
        table = np.histogram2d(a, b, bins=10, range=[[0, 1], [0, 1]])[0]
        assert stats.chisquare(table.ravel()).pvalue > 1e-3
    # another seed or another attack gives other numbers
    other_seed = EventRandom.of(4, "pgd", torch.arange(50_000)).uniform((50_000, 4))
    other_attack = EventRandom.of(3, "apgd", torch.arange(50_000)).uniform((50_000, 4))
    for other in (other_seed, other_attack):
        assert abs(np.corrcoef(u.ravel(), other.double().numpy().ravel())[0, 1]) < 0.02
    assert stream_key(3, "pgd") != stream_key(3, "apgd") != stream_key(4, "apgd")


def test_an_events_numbers_do_not_depend_on_its_batch() -> None:
    whole = EventRandom.of(9, "spsa", torch.arange(1000))
    first, second = whole.uniform((1000, 5, 3)), whole.uniform((1000, 5, 3))
    part = EventRandom.of(9, "spsa", torch.arange(1000)[[17, 3, 999]])
    assert torch.equal(part.uniform((3, 5, 3)), first[[17, 3, 999]])
    assert torch.equal(part.uniform((3, 5, 3)), second[[17, 3, 999]])
    # padding trimmed to the longest jet of a batch: the kept particles keep their numbers
    trimmed = EventRandom.of(9, "spsa", torch.arange(1000)[:10])
    assert torch.equal(trimmed.uniform((10, 2, 3)), first[:10, :2])
    # some columns only, and a subset view that shares the draw counter
    columns = EventRandom.of(9, "spsa", torch.arange(1000))
    assert torch.equal(columns.uniform((1000, 5, 3), columns=torch.tensor([2])), first[..., [2]])
    view = columns.subset(torch.tensor([5, 6]))
    assert torch.equal(view.uniform((2, 5, 3)), second[[5, 6]])
    # points drawn with copy numbers get the same numbers in any grouping
    copies = whole.fork("samples")
    all_four = copies.with_copies(torch.arange(4)).uniform((4, 1000, 2), copies=True)
    last_two = copies.with_copies(torch.arange(2, 4)).uniform((2, 1000, 2), copies=True)
    assert torch.equal(last_two, all_four[2:])
    assert not torch.equal(copies.uniform((1000, 5, 3)), first)  # a fork is another stream


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_the_same_bits_as_the_cpu() -> None:
    cpu = EventRandom.of(5, "pgd", torch.arange(10_000)).uniform((10_000, 7, 4))
    cuda = EventRandom.of(5, "pgd", torch.arange(10_000, device="cuda")).uniform((10_000, 7, 4))
    assert torch.equal(cpu, cuda.cpu())


# --- the kept sample of a streamed run ---------------------------------------------------------


def _stream(n: int, size: int, start: int = 0) -> list[Chunk]:
    events = torch.arange(start, start + n)
    return [
        Chunk(s + start, {"x": events[s : s + size, None].float()}, events[s : s + size])
        for s in range(0, n, size)
    ]


def test_reservoirs_of_parts_merge_into_the_whole() -> None:
    whole = Reservoir(40, seed=2)
    for chunk in _stream(500, 500):
        whole.offer(chunk)
    first, second = Reservoir(40, seed=2), Reservoir(40, seed=2)
    for chunk in _stream(230, 50):
        first.offer(chunk)
    for chunk in reversed(_stream(270, 64, start=230)):  # any order
        second.offer(chunk)
    second.merge(first)
    index, inputs, labels = second.sample()
    assert np.array_equal(index, whole.sample()[0]) and len(index) == 40
    assert torch.equal(labels, torch.from_numpy(index))
    assert torch.equal(inputs["x"][:, 0].long(), labels)
    with pytest.raises(ValueError, match="do not merge"):
        second.merge(Reservoir(40, seed=3))


# --- a run gives the same figures however it is split ------------------------------------------

ATTACKS: dict[str, dict[str, Any]] = {
    "pgd": {"method": "pgd", "steps": 10},
    "apgd": {"method": "apgd", "steps": 10, "restarts": 2},
    "spsa": {"method": "spsa", "steps": 4, "samples": 4},
    "random": {"method": "random", "samples": 30},
    "ensemble": {"method": "ensemble", "attacks": ["apgd_ce", "spsa"]},
    "radius": {"method": "min_epsilon", "max_epsilon": 2.0, "steps": 8, "bisections": 3},
}


def _run(folder: Path, batch_size: int | None = None, chunk_size: int | None = None) -> SpecRun:
    doc = base_spec("tagger.pt", epsilon=1.5)
    # an integer feature: every attack rounds it stochastically, with the events' streams
    doc["envelope"]["x"]["n_const"] = {"integer": True, "absolute": 1.0, "min": 0}
    doc["attacks"] = {
        name: {"epsilon": 1.5, "seed": 11, **table, "batch_size": batch_size}
        for name, table in ATTACKS.items()
    }
    for table in doc["attacks"].values():
        if table["batch_size"] is None:
            del table["batch_size"]
    doc["attacks"]["radius"].pop("epsilon")
    if chunk_size is not None:
        doc["data"]["nominal"]["chunk_size"] = chunk_size
        doc["data"]["nominal"]["keep_events"] = 3000  # every event, in file order
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> SpecRun:
    return _run(model_dir)


def _assert_same(run: SpecRun, reference: SpecRun, attack: str) -> None:
    ours, theirs = run.adversaries(attack), reference.adversaries(attack)
    assert int(theirs.fooled.sum()) > 20  # the attack fools events: the comparison bites
    assert torch.equal(ours.fooled, theirs.fooled)
    assert torch.equal(ours.log_probs, theirs.log_probs)
    for name in theirs.adversarial:
        assert torch.equal(ours.adversarial[name], theirs.adversarial[name]), name
    assert ours.per_event.keys() == theirs.per_event.keys()
    for name, values in theirs.per_event.items():
        assert torch.equal(ours.per_event[name].isnan(), values.isnan())
        assert torch.equal(ours.per_event[name].nan_to_num(), values.nan_to_num())


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("batch_size", [256, 65536])
def test_batch_size_changes_nothing(
    model_dir: Path, reference: SpecRun, attack: str, batch_size: int
) -> None:
    _assert_same(_run(model_dir, batch_size=batch_size), reference, attack)


@pytest.mark.parametrize("attack", ["pgd", "ensemble", "radius"])
def test_chunks_change_nothing(model_dir: Path, reference: SpecRun, attack: str) -> None:
    _assert_same(_run(model_dir, chunk_size=700, batch_size=300), reference, attack)
    streamed = _run(model_dir, chunk_size=700)
    rate = streamed.run_check(streamed.spec.checks[0])
    assert rate.figures == reference.run_check(reference.spec.checks[0]).figures


def test_an_out_of_memory_split_changes_nothing(
    model_dir: Path, reference: SpecRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of more than 400 events "runs out of memory": the engine splits it in halves."""
    from robustcheck.attacks.pgd import PGD

    attacked = int(reference.adversaries("pgd").correct.sum())  # before the patch below
    perturb, sizes = PGD.perturb, []

    def tight(self: PGD, batch: AttackBatch) -> dict[str, torch.Tensor]:
        sizes.append(len(batch.target))
        if len(batch.target) > 400:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return perturb(self, batch)

    monkeypatch.setattr(PGD, "perturb", tight)
    with pytest.warns(RuntimeWarning, match="retried in halves"):
        _assert_same(_run(model_dir), reference, "pgd")
    ran = [size for size in sizes if size <= 400]
    assert max(sizes) > 400 and sum(ran) == attacked


def test_a_coupled_attack_runs_fixed_blocks(model_dir: Path) -> None:
    """constrained_pgd's penalty couples a batch's events: its blocks are fixed stretches of
    the sample, so chunking changes nothing, and a chunk size that cuts them is refused."""

    def run(chunk_size: int | None) -> SpecRun:
        doc = base_spec("tagger.pt", epsilon=1.5)
        doc["attacks"] = {
            "cpgd": {"method": "constrained_pgd", "epsilon": 1.5, "steps": 8, "batch_size": 500}
        }
        doc["checks"][0]["attack"] = "cpgd"
        if chunk_size is not None:
            doc["data"]["nominal"]["chunk_size"] = chunk_size
            doc["data"]["nominal"]["keep_events"] = 3000
        return SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")

    whole, streamed = run(None).adversaries("cpgd"), run(1000).adversaries("cpgd")
    assert int(whole.fooled.sum()) > 0
    assert torch.equal(whole.fooled, streamed.fooled)
    assert torch.equal(whole.adversarial["x"], streamed.adversarial["x"])
    with pytest.raises(SpecError, match="not a multiple") as error:
        run(700).adversaries("cpgd")
    assert error.value.field == "data.nominal.chunk_size"
