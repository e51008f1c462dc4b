"""Streaming in chunks: readers read a range of events, chunks put together give the whole
sample, the kept random sample is uniform, and a streamed run gives the same answers as one
that holds the whole sample. Peak memory is measured in benchmarks/streaming_memory.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck import data as data_module
from robustcheck.core import SpecRun
from robustcheck.data import load_dataset, read_chunks
from robustcheck.data.reader import Reader, as_reader
from robustcheck.errors import DataError, SpecError
from robustcheck.spec import parse_spec
from robustcheck.stream import Chunk, Reservoir
from tests import particle_fixtures
from tests.particle_fixtures import particle_spec
from tests.test_data_formats import (
    JAGGED_WRITERS,
    LONGEST,
    WRITERS,
    flat_events,
    jagged_events,
    spec_for,
    write_npz,
)

particle_dir = particle_fixtures.particle_dir


def write_flat(tmp_path: Path, suffix: str) -> Path:
    """The flat events in a file of the given kind (.npz compressed or not, .npy too)."""
    flat = flat_events()
    path = tmp_path / f"data.{suffix.lstrip('.').replace('compressed', '')}"
    if suffix == ".npz":
        return write_npz(path, flat, {})
    if suffix == "compressed.npz":
        np.savez_compressed(path, **flat)
        return path
    if suffix == ".npy":
        table = np.zeros(len(flat["y"]), dtype=[(k, v.dtype) for k, v in flat.items()])
        for key, value in flat.items():
            table[key] = value
        np.save(path, table)
        return path
    return WRITERS[suffix](path, flat, {})


def chunked(spec: Any, size: int) -> list[tuple[int, Any]]:
    return list(read_chunks(spec, spec.path.parent / "robustness.toml", size))


def assert_chunks_make_the_whole(spec: Any, size: int) -> None:
    whole = load_dataset(spec, spec.path.parent / "robustness.toml")
    parts = chunked(spec, size)
    assert [start for start, _ in parts] == list(range(0, len(whole), size))
    assert all(len(part) <= size for _, part in parts)
    np.testing.assert_array_equal(np.concatenate([p.labels for _, p in parts]), whole.labels)
    for name, value in whole.inputs.items():
        np.testing.assert_array_equal(np.concatenate([p.inputs[name] for _, p in parts]), value)


# --- readers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", "compressed.npz", ".npy", *WRITERS])
@pytest.mark.parametrize("size", [7, 40, 100])
def test_flat_chunks_make_the_whole_sample(tmp_path: Path, suffix: str, size: int) -> None:
    path = write_flat(tmp_path, suffix)
    assert_chunks_make_the_whole(spec_for(path, inputs={"jet": ["pt", "eta", "mass"]}), size)


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_jagged_chunks_make_the_whole_sample(tmp_path: Path, suffix: str) -> None:
    flat, _, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    spec = spec_for(
        path, inputs={"parts": ["c_pt", "c_eta"], "pt": "pt"}, masks={"mask": "parts"}, pad=8
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two events are longer than pad
        assert_chunks_make_the_whole(spec, 6)


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_truncation_is_counted_over_every_chunk_and_warned_once(
    tmp_path: Path, suffix: str
) -> None:
    flat, counts, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    spec = spec_for(path, inputs={"parts": ["c_pt"]}, pad=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunked(spec, 5)  # events 3 and 17 (12 and 10 entries) fall in different chunks
    texts = [str(w.message) for w in caught if "pad = 8" in str(w.message)]
    assert len(texts) == 1
    assert f"2 of {len(counts)} events" in texts[0] and f"largest {LONGEST}" in texts[0]


@pytest.mark.parametrize("suffix", JAGGED_WRITERS)
def test_truncation_error_names_the_event_in_the_file(tmp_path: Path, suffix: str) -> None:
    flat, _, lists = jagged_events()
    path = WRITERS[suffix](tmp_path / f"data.{suffix.lstrip('.')}", flat, lists)
    spec = spec_for(path, inputs={"parts": ["c_pt"]}, pad=8, truncate="error")
    with pytest.raises(DataError, match=r"1 of 2 events \(from event 2\) .*first at event 3\)"):
        chunked(spec, 2)  # event 3 (12 entries) lies in the second chunk


def test_nan_is_located_in_the_whole_file(tmp_path: Path) -> None:
    flat = flat_events()
    flat["eta"][23] = np.nan
    path = write_npz(tmp_path / "data.npz", flat, {})
    with pytest.raises(DataError, match=r"first at index \(23,\)"):
        chunked(spec_for(path, inputs={"jet": "eta"}), 10)


@pytest.mark.parametrize("suffix", [".npz", *WRITERS])
def test_max_events_stops_the_stream(tmp_path: Path, suffix: str) -> None:
    path = write_flat(tmp_path, suffix)
    parts = chunked(spec_for(path, inputs={"jet": ["pt", "eta"]}, max_events=23), 10)
    assert [len(part) for _, part in parts] == [10, 10, 3]
    labels = np.concatenate([part.labels for _, part in parts])
    np.testing.assert_array_equal(labels, flat_events()["y"][:23])


def test_a_plugin_reader_that_does_not_stream_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    """A plain read function (no ``streams = True``) reads whole files; chunk_size is refused
    for its files with a DataError, even when the function happens to take ``start``."""
    calls: list[dict[str, Any]] = []

    def read(path: Path, keys: list[str], tree: Any = None, max_events: Any = None, start=0):
        calls.append({"max_events": max_events, "start": start})
        return dict(np.load(path))

    plain = as_reader(read)
    assert isinstance(plain, Reader) and plain.streams is False
    monkeypatch.setattr(data_module, "_reader", lambda spec, spec_file: plain)
    path = write_flat(tmp_path, ".npz")
    with pytest.raises(DataError, match=r"does not declare `streams = True`") as info:
        chunked(spec_for(path, inputs={"jet": "pt"}), 10)
    assert info.value.field == "data.nominal.chunk_size"
    assert info.value.fix == "remove chunk_size to read the whole file at once"
    assert calls == []
    whole = load_dataset(spec_for(path, inputs={"jet": "pt"}, chunk_size=None), tmp_path / "r.toml")
    assert len(whole) == len(flat_events()["y"]) and calls == [{"max_events": None, "start": 0}]


def test_built_in_readers_declare_that_they_stream() -> None:
    from robustcheck.data import READERS

    for suffix, declared in READERS.items():
        loaded = declared.load()
        assert isinstance(loaded, Reader), suffix
        assert loaded.streams is True, suffix
        assert as_reader(loaded) is loaded


def test_a_reader_class_declares_streams_as_a_class_attribute(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A class with ``streams = True`` streams; its chunks give the whole sample."""

    class NpzReader:
        streams = True

        def __call__(self, path, keys, tree=None, max_events=None, start=0):  # type: ignore[no-untyped-def]
            stop = None if max_events is None else start + max_events
            with np.load(path) as archive:
                return {key: archive[key][start:stop] for key in keys}

    assert as_reader(NpzReader()).streams is True
    monkeypatch.setattr(data_module, "_reader", lambda spec, spec_file: as_reader(NpzReader()))
    path = write_flat(tmp_path, ".npz")
    parts = chunked(spec_for(path, inputs={"jet": "pt"}), 10)
    labels = np.concatenate([part.labels for _, part in parts])
    np.testing.assert_array_equal(labels, flat_events()["y"])
    assert [start for start, _ in parts] == list(range(0, len(labels), 10))


def test_chunk_reads_touch_only_their_row_groups(tmp_path: Path, monkeypatch: Any) -> None:
    import pyarrow.parquet as pq

    path = write_flat(tmp_path, ".parquet")  # row groups of 16 events
    groups: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups

    def spy(self: Any, row_groups: list[int], *args: Any, **kwargs: Any) -> Any:
        groups.append(list(row_groups))
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    chunked(spec_for(path, inputs={"jet": "pt"}), 10)
    assert groups == [[0], [0, 1], [1], [1, 2]]  # events 0-15, 16-31, 32-39


# --- the kept random sample --------------------------------------------------------------------


def stream_of(n: int, size: int) -> list[Chunk]:
    events = torch.arange(n)
    return [
        Chunk(
            start, {"x": events[start : start + size, None].float()}, events[start : start + size]
        )
        for start in range(0, n, size)
    ]


@pytest.mark.parametrize("size", [1, 7, 50, 1000])
def test_the_kept_sample_does_not_depend_on_the_chunking(size: int) -> None:
    reference = Reservoir(30, seed=4)
    for chunk in stream_of(400, 400):
        reference.offer(chunk)
    reservoir = Reservoir(30, seed=4)
    for chunk in stream_of(400, size):
        reservoir.offer(chunk)
    index, inputs, labels = reservoir.sample()
    assert np.array_equal(index, reference.sample()[0])
    assert np.all(np.diff(index) > 0) and len(index) == 30
    assert torch.equal(labels, torch.from_numpy(index)) and torch.equal(
        inputs["x"][:, 0].long(), labels
    )


def test_the_kept_sample_is_uniform() -> None:
    from scipy import stats

    n, k, repeats = 60, 12, 3000
    hits = np.zeros(n)
    for seed in range(repeats):
        reservoir = Reservoir(k, seed=seed)
        for chunk in stream_of(n, 9):
            reservoir.offer(chunk)
        hits[reservoir.sample()[0]] += 1
    assert hits.sum() == k * repeats
    # every event is kept with probability k / n: a chi-squared test of the counts
    expected = np.full(n, k * repeats / n)
    assert stats.chisquare(hits, expected).pvalue > 1e-3


def test_a_reservoir_larger_than_the_stream_keeps_everything() -> None:
    reservoir = Reservoir(100)
    for chunk in stream_of(37, 10):
        reservoir.offer(chunk)
    index, inputs, _ = reservoir.sample()
    assert np.array_equal(index, np.arange(37)) and inputs["x"].shape == (37, 1)


# --- a streamed run gives the same answers -------------------------------------------------------

DETERMINISTIC = {
    "fgsm": {"method": "fgsm", "epsilon": 1.0},
    "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 8, "random_start": False},
    "up": {"method": "shift", "epsilon": 1.0, "mode": "up"},
}
JES = [{"name": "jes", "features": ["pt"], "coherent": True, "relative": 0.05}]


def particle_run(folder: Path, chunk_size: int | None = None, keep: int | None = None) -> SpecRun:
    doc = particle_spec("pfn.pt", attacks=DETERMINISTIC, groups=JES)
    doc["checks"].append({"type": "invariance", "attack": "pgd", "ks_min_pvalue": 1e-6})
    if chunk_size is not None:
        doc["data"]["nominal"]["chunk_size"] = chunk_size
    if keep is not None:
        doc["data"]["nominal"]["keep_events"] = keep
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


@pytest.fixture(scope="module")
def whole_run(particle_dir: Path) -> SpecRun:
    return particle_run(particle_dir)


@pytest.mark.parametrize("attack", list(DETERMINISTIC))
def test_streamed_attack_matches_the_whole_sample(
    particle_dir: Path, whole_run: SpecRun, attack: str
) -> None:
    streamed = particle_run(particle_dir, chunk_size=130, keep=200)
    assert torch.allclose(streamed.log_probs(), whole_run.log_probs(), atol=1e-6)
    assert torch.equal(streamed.labels(), whole_run.labels())
    ours, reference = streamed.adversaries(attack), whole_run.adversaries(attack)
    assert bool(reference.fooled.any())
    assert torch.equal(ours.correct, reference.correct)
    assert torch.equal(ours.fooled, reference.fooled)
    assert torch.allclose(ours.log_probs, reference.log_probs, atol=1e-5)
    # the kept events are those of the whole sample at the kept positions, attack and all
    kept = torch.from_numpy(ours.kept)
    assert len(kept) == 200 and ours.nominal["parts"].shape[0] == 200
    for name in ours.nominal:
        assert torch.equal(ours.nominal[name], reference.nominal[name][kept])
        assert torch.allclose(ours.adversarial[name], reference.adversarial[name][kept], atol=1e-6)
    padding = ours.nominal["mask"] == 0
    assert torch.equal(ours.adversarial["parts"][padding], ours.nominal["parts"][padding])
    # the mean shift of the fooled events is summed over every chunk, not the kept sample
    assert [f for f, _ in ours.fooled_shifts] == [f for f, _ in reference.fooled_shifts]
    for (_, a), (_, b) in zip(ours.fooled_shifts, reference.fooled_shifts, strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_streamed_checks_report_the_same_rate_and_the_sample_they_used(
    particle_dir: Path, whole_run: SpecRun
) -> None:
    streamed = particle_run(particle_dir, chunk_size=130, keep=200)
    rate, invariance = streamed.run()
    reference = whole_run.run()[0]
    assert rate.figures["fooling_rate"] == reference.figures["fooling_rate"]
    assert rate.figures["n_events"] == reference.figures["n_events"]
    assert invariance.figures["n_events_tested"] == 200
    assert any("random sample of 200 of the 800 events" in line for line in invariance.details)


def test_a_streamed_run_holds_at_most_a_chunk_and_the_kept_sample(
    particle_dir: Path, monkeypatch: Any
) -> None:
    """The structural half of the memory bound: no read returns more than one chunk, and the
    run keeps the inputs of ``keep_events`` events only (the benchmark measures the RSS)."""
    from robustcheck.data import numpy as numpy_reader

    reads: list[int] = []
    original = numpy_reader._npz_rows

    def spy(*args: Any, **kwargs: Any) -> np.ndarray:
        rows = original(*args, **kwargs)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(numpy_reader, "_npz_rows", spy)
    run = particle_run(particle_dir, chunk_size=64, keep=50)
    run.adversaries("pgd")
    assert reads and max(reads) == 64
    inputs, labels = run.inputs()
    assert len(labels) == 50 and all(len(x) == 50 for x in inputs.values())
    assert run.n_events() == 800 and len(run.log_probs()) == 800


def test_keep_events_needs_chunk_size(particle_dir: Path) -> None:
    doc = particle_spec("pfn.pt")
    doc["data"]["nominal"]["keep_events"] = 100
    with pytest.raises(SpecError, match="only to a sample streamed in chunks") as info:
        parse_spec(doc, particle_dir / "robustness.toml")
    assert info.value.field == "data.nominal.keep_events"


def test_streaming_settings_enter_the_fingerprint_only_when_streaming(particle_dir: Path) -> None:
    from robustcheck.baseline import fingerprints

    plain = particle_run(particle_dir)
    check = plain.spec.checks[0]
    streamed = particle_run(particle_dir, chunk_size=130)
    again = particle_run(particle_dir, chunk_size=130)
    assert (
        fingerprints(plain.spec, check)["data selection"]
        != fingerprints(streamed.spec, check)["data selection"]
    )
    assert fingerprints(streamed.spec, check) == fingerprints(again.spec, check)


def test_a_streamed_alternative_sample_gives_the_same_resilience(
    particle_dir: Path, whole_run: SpecRun
) -> None:
    docs = []
    for chunk_size in (None, 77):
        doc = particle_spec("pfn.pt", attacks=DETERMINISTIC, groups=JES)
        alternative = dict(doc["data"]["nominal"], max_events=500)
        if chunk_size is not None:
            alternative["chunk_size"] = chunk_size
        doc["data"]["alternative"] = alternative
        doc["checks"] = [{"type": "resilience", "max_auc_change_percent": 50.0}]
        docs.append(doc)
    results = [
        SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu").run()[0]
        for doc in docs
    ]
    assert results[0].figures["auc_alternative"] == pytest.approx(
        results[1].figures["auc_alternative"], abs=1e-9
    )
    # the error depends on the event counts: 500 events either way
    assert results[0].figures["auc_alternative_error"] == pytest.approx(
        results[1].figures["auc_alternative_error"], rel=1e-9
    )
    assert results[0].figures["auc_nominal"] != results[0].figures["auc_alternative"]


def test_the_command_line_streams_and_the_report_says_which_events_it_plots(
    particle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import tomli_w

    from robustcheck.cli import main

    doc = particle_spec("pfn.pt", attacks=DETERMINISTIC, groups=JES)
    doc["checks"] = [
        {"type": "fooling_rate", "attack": "pgd", "max": 1.0},
        {"type": "invariance", "attack": "pgd", "ks_min_pvalue": 1e-12},
    ]
    doc["data"]["nominal"].update(chunk_size=300, keep_events=150)
    # the spec in the test's own folder, over the session's particle files by absolute path
    doc["model"]["path"] = str(particle_dir / doc["model"]["path"])
    doc["data"]["nominal"]["path"] = str(particle_dir / doc["data"]["nominal"]["path"])
    spec = tmp_path / "streamed_cli.robust.toml"
    spec.write_text(tomli_w.dumps(doc))
    report = tmp_path / "report"
    assert main(["run", str(spec), "--device", "cpu", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "random sample of 150 of the 800 events" in out
    data = json.loads((report / "report.json").read_text())
    attack = data["specs"][0]["attacks"]["pgd"]
    assert attack["histograms"] and "random sample of 150" in attack["histograms_note"]
    assert "random sample of 150" in (report / "report.html").read_text()


def test_a_broken_alternative_sample_fails_only_the_checks_that_read_it(
    particle_dir: Path,
) -> None:
    doc = particle_spec("pfn.pt", attacks=DETERMINISTIC, groups=JES)
    doc["data"]["alternative"] = dict(doc["data"]["nominal"], labels="label")
    doc["checks"].append({"type": "resilience", "max_auc_change_percent": 50.0})
    run = SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu")
    assert run.run_check(run.spec.checks[0]).figures["n_events"] > 0
    with pytest.raises(DataError, match=r"no array\(s\) \['label'\]"):
        run.run_check(run.spec.checks[1])
