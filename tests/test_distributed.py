"""Dask (``--dask`` / ``--robustcheck-dask``): a run through a ``local:2`` cluster gives the
same fooled events and figures as one process, for a sample held in memory and for streamed
HDF5 and ROOT files; worker errors come back whole; without dask the flags name the extra.
Throughput is measured in benchmarks/dask_throughput.py."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.cli import main
from robustcheck.core import SpecRun
from robustcheck.errors import DataError
from tests import particle_fixtures
from tests.conftest import FEATURES, base_spec, copy_models, write_spec
from tests.particle_fixtures import particle_spec
from tests.test_data_formats import write_h5, write_root

pytest.importorskip("distributed")

from robustcheck.distributed import EXTRA, DaskError, DaskRanges  # noqa: E402

particle_dir = particle_fixtures.particle_dir

ATTACKS = {
    "fgsm": {"method": "fgsm", "epsilon": 1.0},
    "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 6, "random_start": False},
    # random starts: per-batch streams now, per-event streams later; the same either way
    "pgd_random": {"method": "pgd", "epsilon": 1.0, "steps": 6, "seed": 3},
    "ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["fgsm", "pgd_random"]},
    # its penalty couples the events of a batch: ranges hold whole batches
    "constrained": {"method": "constrained_pgd", "epsilon": 1.0, "steps": 4},
}
STREAMED = ["fgsm", "pgd_random"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskRanges]:
    with DaskRanges.connect("local:2") as ranges:
        yield ranges


@pytest.fixture(scope="module")
def folder(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test MLP with its events in HDF5 and ROOT files."""
    here = copy_models(model_dir, tmp_path_factory.mktemp("dask"))
    events = dict(np.load(here / "data.npz"))
    write_h5(here / "data.h5", events, {})
    columns = {name: events["x"][:, i].copy() for i, name in enumerate(FEATURES)}
    write_root(here / "data.root", {**columns, "y": events["y"]}, {})  # stacked by the spec
    return here


def spec_file(
    folder: Path, data: str, name: str, attacks: list[str] = STREAMED, **nominal: Any
) -> Path:
    """A spec over ``data`` with the attacks (and those an ensemble runs) and a fooling-rate
    check of each, in ``NAME.robust.toml``."""
    doc = base_spec("tagger.pt")
    doc["data"]["nominal"].update(path=data, **nominal)
    if data.endswith(".root"):
        doc["data"]["nominal"].update(tree="Events", inputs={"x": list(FEATURES)})
    needed = {*attacks, *(m for a in attacks for m in ATTACKS[a].get("attacks", []))}
    doc["attacks"] = {key: {**ATTACKS[key], "batch_size": 256} for key in sorted(needed)}
    doc["checks"] = [
        {"name": f"fooling {attack}", "type": "fooling_rate", "attack": attack, "max": 0.05}
        for attack in attacks
    ]
    doc["checks"].append({"type": "invariance", "attack": attacks[-1], "ks_min_pvalue": 1e-6})
    return write_spec(folder, doc, f"{name}.robust.toml")


def assert_same_runs(path: Path, cluster: DaskRanges) -> None:
    here, there = (
        SpecRun.from_path(path, device="cpu"),
        SpecRun.from_path(path, device="cpu", cluster=cluster),
    )
    assert torch.equal(here.labels(), there.labels())
    assert torch.equal(here.log_probs(), there.log_probs())
    for attack in here.spec.attacks:
        ours, theirs = here.adversaries(attack), there.adversaries(attack)
        assert bool(ours.fooled.any())
        assert torch.equal(ours.fooled, theirs.fooled), attack
        assert torch.equal(ours.log_probs, theirs.log_probs), attack
        assert ours.fooled_shifts == theirs.fooled_shifts
        assert (ours.kept is None) == (theirs.kept is None)
        if ours.kept is not None:
            assert np.array_equal(ours.kept, theirs.kept)
        for name in ours.adversarial:
            assert torch.equal(ours.nominal[name], theirs.nominal[name])
            assert torch.equal(ours.adversarial[name], theirs.adversarial[name])
    for a, b in zip(here.run(), there.run(), strict=True):
        assert timeless(a.figures) == timeless(b.figures)
        assert a.passed == b.passed
        assert [timeless(line) for line in a.details] == [timeless(line) for line in b.details]


def timeless(found: Any) -> Any:
    """Figures or a line without the seconds an attack took (which differ run to run)."""
    if isinstance(found, dict):
        return {key: value for key, value in found.items() if "second" not in key}
    return re.sub(r"\([0-9.e+-]+ s\)", "(s)", found)


def test_a_sample_in_memory_gives_the_figures_of_one_process(
    folder: Path, cluster: DaskRanges
) -> None:
    """Ranges of whole attack batches: an ensemble (its tallies) and constrained_pgd too."""
    path = spec_file(folder, "data.h5", "memory", ["pgd", "ens", "constrained"])
    assert_same_runs(path, cluster)


@pytest.mark.parametrize(
    ("data", "size"), [("data.h5", 700), ("data.root", 1000)], ids=["hdf5", "root"]
)
def test_a_streamed_file_gives_the_figures_of_one_process(
    folder: Path, cluster: DaskRanges, data: str, size: int
) -> None:
    """The workers read the chunks themselves; the kept events are the same."""
    path = spec_file(folder, data, data.replace(".", "_"), chunk_size=size, keep_events=400)
    assert_same_runs(path, cluster)


def test_an_error_on_a_worker_comes_back_whole(folder: Path, cluster: DaskRanges) -> None:
    path = spec_file(folder, "data.h5", "strict", chunk_size=700, strict_bounds=True)
    text = path.read_text()
    path.write_text(text.replace("min = 0.0", "min = 540.0", 1))  # jet_pt: 500 to 550
    assert path.read_text() != text
    with pytest.raises(DataError) as info:
        SpecRun.from_path(path, device="cpu", cluster=cluster).labels()
    assert info.value.field == "data.nominal.strict_bounds"


def test_pytest_runs_the_specs_on_the_cluster(
    folder: Path, cluster: DaskRanges, pytester: pytest.Pytester
) -> None:
    """--robustcheck-dask takes the address of the module's cluster (the fixture starts it
    from ``local:2``, as the flag does; a second one would double this module's time)."""
    spec = spec_file(folder, "data.h5", "pytest", chunk_size=700, keep_events=500)
    address = cluster.client.scheduler_info()["address"]
    result = pytester.runpytest_inprocess(
        "--robustcheck", "--robustcheck-dask", address, str(spec), "-p", "no:cacheprovider"
    )
    reference = SpecRun.from_path(spec, device="cpu").run()
    failed = sum(not r.passed for r in reference)
    result.assert_outcomes(passed=len(reference) - failed, failed=failed)


def test_several_specs_run_at_once_on_the_cluster(
    folder: Path, cluster: DaskRanges, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [spec_file(folder, "data.h5", f"cli{i}", chunk_size=700 * (i + 1)) for i in range(2)]
    code = main(["run", *map(str, specs), "--dask", cluster.client.scheduler_info()["address"]])
    printed = capsys.readouterr().out
    alone = [SpecRun.from_path(spec, device="cpu").run() for spec in specs]
    assert code == (1 if any(not r.passed for rs in alone for r in rs) else 0)
    verdicts = [
        f"{'PASSED' if r.passed else 'FAILED'} {spec}::{r.name}"
        for spec, results in zip(specs, alone, strict=True)
        for r in results
    ]
    lines = printed.splitlines()
    where = [lines.index(verdict) for verdict in verdicts]
    assert where == sorted(where)  # each spec's verdicts together, in the order given
    assert alone[1][0].summary.split(" | ")[0] in printed


@pytest.fixture
def no_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    """dask.distributed as if not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "distributed", None)


@pytest.mark.usefixtures("no_dask")
def test_without_dask_the_flags_name_the_extra(
    folder: Path, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_file(folder, "data.h5", "missing")
    with pytest.raises(DaskError, match=r"pip install 'pytest-robustcheck\[dask\]'"):
        DaskRanges.connect("local:2")
    assert main(["run", str(spec), "--dask", "local:2"]) == 2
    assert EXTRA in capsys.readouterr().err
    result = pytester.runpytest_inprocess("--robustcheck", "--robustcheck-dask", "local:2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert EXTRA in result.stderr.str()


def test_a_bad_address_is_refused_with_the_form_to_use() -> None:
    with pytest.raises(DaskError, match="local:N") as info:
        DaskRanges.connect("local:many", "--robustcheck-dask")
    assert info.value.field == "--robustcheck-dask"


def test_pareto_evaluates_the_specs_at_once_on_the_cluster(
    folder: Path, cluster: DaskRanges
) -> None:
    from robustcheck.pareto import pareto_of_specs

    specs = []
    for i in range(2):
        path = spec_file(folder, "data.h5", f"pareto{i}", chunk_size=700)
        text = path.read_text()
        alternative = '[data.alternative]\npath = "alt.npz"\nlabels = "y"\ninputs = { x = "x" }\n'
        path.write_text(text.replace("[inputs.x]", alternative + "\n[inputs.x]", 1))
        specs.append(str(path))
    assert pareto_of_specs(specs, "cpu", cluster) == pareto_of_specs(specs, "cpu")


@pytest.mark.parametrize("streamed", [True, False])
def test_trimmed_padding_is_verified_and_named_as_in_one_process(
    particle_dir: Path, tmp_path: Path, cluster: DaskRanges, streamed: bool
) -> None:
    """A particle sample with trim_padding, streamed or in memory (ranges of whole windows of
    TRIM_WINDOW events; tests/test_padding.py checks ranges of several windows): the same
    figures and the same note."""
    doc = particle_spec("pfn:build", attacks={"pgd": ATTACKS["pgd_random"]})
    doc["inputs"]["parts"]["trim_padding"] = True
    if streamed:
        doc["data"]["nominal"].update(chunk_size=300, keep_events=200)
    path = write_spec(copy_models(particle_dir, tmp_path), doc)
    assert_same_runs(path, cluster)
    for result in SpecRun.from_path(path, device="cpu", cluster=cluster).run():
        assert any("trim_padding" in line for line in result.details)
