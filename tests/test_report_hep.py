"""HEP-style report plots: per-class histograms with errors, the discriminant, the fooled
events' pulls, loss surfaces, ROC bands, invariance samples and events_to_detect, units."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from robustcheck.checks.property import changed_entries
from robustcheck.envelope import Envelope
from robustcheck.report import plots
from robustcheck.report.data import events_to_detect_table
from robustcheck.report.records import check_record
from robustcheck.report.writer import write_report
from robustcheck.result import CheckResult
from robustcheck.sanity import bounds_message
from robustcheck.spec import CheckSpec, parse_spec
from tests.conftest import base_spec, write_spec

pytest_plugins = ["pytester"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVENTS = 600


def hep_spec() -> dict[str, Any]:
    """Units, an alternative sample, a fooling-rate, an invariance and a loss-surface check."""
    doc = base_spec()
    doc["envelope"]["x"]["jet_pt"]["unit"] = "GeV"
    doc["envelope"]["x"]["jet_mass"]["unit"] = "GeV"
    doc["data"]["nominal"]["max_events"] = EVENTS
    doc["data"]["alternative"] = {
        "path": "alt.npz",
        "labels": "y",
        "inputs": {"x": "x"},
        "max_events": EVENTS,
    }
    doc["checks"] = [
        {"name": "rate", "type": "fooling_rate", "attack": "pgd", "max": 1.0},
        {
            "name": "shape",
            "type": "invariance",
            "attack": "pgd",
            "by_class": True,
            "ks_min_pvalue": 0.01,
            "control_region_events": 10,
        },
        {
            "name": "surface",
            "type": "loss_surface",
            "max_loss_increase": 10.0,
            "points": 5,
            "grid": ["jet_pt", "jet_mass"],
            "max_events": 200,
        },
    ]
    return doc


def at(spec: dict[str, Any], where: str) -> Any:
    """The value at ``attacks.pgd.pulls[0]`` (a plot entry's ``data``) in a spec entry."""
    value: Any = spec
    for name, index in re.findall(r"([^.\[\]]+)(?:\[(\d+)\])?", where):
        value = value[name]
        if index:
            value = value[int(index)]
    return value


@pytest.fixture
def ran(pytester: pytest.Pytester, model_dir: Path) -> tuple[dict[str, Any], Path, str]:
    for name in ("tagger.pt", "data.npz", "alt.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    write_spec(pytester.path, hep_spec())
    # in a subprocess: an in-process run that imports matplotlib breaks later tests
    result = pytester.runpytest_subprocess("--robustcheck", "--robustcheck-report=rep")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    doc = json.loads((pytester.path / "rep" / "report.json").read_text())
    page = (pytester.path / "rep" / "report.html").read_text()
    return doc, pytester.path / "rep", page


def test_every_plot_kind_is_drawn_and_backed_by_its_numbers(
    ran: tuple[dict[str, Any], Path, str],
) -> None:
    doc, folder, page = ran
    assert doc["problems"] == []
    (spec,) = doc["specs"]
    kinds = {p["kind"] for p in spec["plots"]}
    assert kinds == {
        "histogram",
        "discriminant",
        "pulls",
        "roc",
        "loss_surface",
        "loss_surface_grid",
        "invariance_histogram",
    }
    for plot in spec["plots"]:
        assert "error" not in plot, plot
        assert (folder / plot["file"]).read_bytes().startswith(PNG_MAGIC)
        assert at(spec, plot["data"].split(",")[0]) is not None  # the numbers behind it
    checks = {c["name"]: c for c in spec["checks"]}
    attack = spec["attacks"]["pgd"]
    n_fooled = attack["n_fooled"]

    # histograms per true class add up to the inclusive one; errors are Poisson
    for h in attack["histograms"]:
        total = np.sum([c["nominal"]["counts"] for c in h["classes"].values()], axis=0)
        assert total.tolist() == h["nominal"]
        for entry in h["classes"].values():
            counts = np.asarray(entry["adversarial"]["counts"])
            assert np.allclose(entry["adversarial"]["errors"], np.sqrt(counts))

    # the discriminant: every event of each sample, per true class
    samples = attack["discriminant"]["samples"]
    assert set(samples) == {"nominal", "attacked", "alternative"}
    for entry in samples.values():
        assert sum(sum(c["counts"]) for c in entry["classes"].values()) == EVENTS

    # the fooled events' pulls: one histogram per movable feature, within epsilon
    pulls = {p["feature"]: p for p in attack["pulls"]}
    assert set(pulls) == {"jet_pt", "jet_mass", "jet_eta"}
    for p in pulls.values():
        assert p["n_events"] == n_fooled
        assert sum(p["counts"]) == p["n_moved"] <= p["n_entries"] == n_fooled
        assert p["edges"][-1] <= 1.05 * (1.0 + 1e-5)  # |pull| <= epsilon = 1 (float32)
        assert abs(p["mean"]) <= p["rms"] <= 1.0 + 1e-5

    # ROC bands: 68% Clopper-Pearson around each background efficiency
    roc = spec["roc"]["nominal"]
    fpr, low, high = (np.asarray(roc[k]) for k in ("fpr", "fpr_low", "fpr_high"))
    assert np.all(low <= fpr + 1e-12) and np.all(fpr <= high + 1e-12)
    i = int(np.argmin(np.abs(fpr - 0.1)))
    k, n = fpr[i] * roc["n_background"], roc["n_background"]
    assert high[i] == pytest.approx(scipy_stats.beta.ppf(0.5 + 0.6827 / 2, k + 1, n - k))
    assert roc["n_signal"] + roc["n_background"] == EVENTS
    assert "Clopper-Pearson" in roc["band"]

    # the loss surface: the check's own curves and grid
    surface = checks["surface"]["plot_data"]["loss_surface"]
    assert np.asarray(surface["profiles"]).shape == (3, 5)
    assert np.asarray(surface["grid"]).shape == (5, 5)
    assert surface["nominal"] == pytest.approx(checks["surface"]["figures"]["nominal_loss"])

    # the invariance check: the independent halves per class, and events_to_detect
    found = checks["shape"]["plot_data"]["invariance"]
    figures = checks["shape"]["figures"]
    assert found["compare_to"] == "independent" and found["split_seed"] == figures["split_seed"]
    assert found["n_attacked"] == figures["n_events_attacked"]
    assert found["n_reference"] + found["n_attacked"] == EVENTS
    for h in found["histograms"]:
        reference = sum(sum(c["reference"]["counts"]) for c in h["classes"].values())
        attacked = sum(sum(c["attacked"]["counts"]) for c in h["classes"].values())
        assert (reference, attacked) == (found["n_reference"], found["n_attacked"])
    rows = found["events_to_detect"]
    keys = [k for k in figures if k.startswith("events_to_detect/")]
    assert len(rows) == len(keys) > 0
    assert {r["region"] for r in rows} >= {"all", "class 0", "class 1"}
    row = rows[0]
    value = figures[f"events_to_detect/{row['test']}/{row['region']}/{row['feature']}"]
    assert row["events_to_detect"] == (value if value is not None else None)
    assert "events per sample at which each test" in page
    assert "in bold: at most control_region_events = 10" in page
    assert "independent nominal half" in page

    # units: in report.json beside every histogram of a feature that has one
    assert {h["feature"]: h["unit"] for h in attack["histograms"]} == {
        "jet_pt": "GeV",
        "jet_mass": "GeV",
        "jet_eta": None,
    }
    assert pulls["jet_pt"]["unit"] == "GeV"
    assert spec["units"] == {"x": {"jet_pt": "GeV", "jet_mass": "GeV"}}
    assert {h["feature"]: h["unit"] for h in found["histograms"]}["jet_mass"] == "GeV"


def class_histogram() -> dict[str, Any]:
    edges = np.linspace(0.0, 100.0, 5).tolist()
    counts = {"counts": [1, 4, 9, 4], "errors": [1, 2, 3, 2]}
    return {
        "input": "x",
        "feature": "jet_pt",
        "unit": "GeV",
        "edges": edges,
        "nominal": [2, 8, 18, 8],
        "adversarial": [2, 8, 18, 8],
        "n_entries": 36,
        "ks_pvalue": 0.5,
        "chi2_pvalue": 0.4,
        "classes": {
            "0": {"nominal": counts, "adversarial": counts},
            "1": {"nominal": counts, "adversarial": counts},
        },
    }


def test_units_on_the_axes_and_in_titles(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[Any] = []
    monkeypatch.setattr(plots, "_png", lambda figure: drawn.append(figure) or PNG_MAGIC)
    plots.histogram(class_histogram(), "pgd", signal_class=1)
    (figure,) = drawn
    top, bottom = figure.axes
    assert bottom.get_xlabel() == "jet_pt [GeV]"
    assert top.get_title(loc="left") == "x: jet_pt [GeV]"
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert "class 1 (signal): nominal" in legend and "class 0: attacked (pgd)" in legend
    pull = {
        "input": "x",
        "feature": "jet_pt",
        "unit": "GeV",
        "edges": [-1.0, 0.0, 1.0],
        "counts": [3, 4],
        "errors": [3**0.5, 2.0],
        "n_events": 5,
        "n_entries": 5,
        "n_moved": 7,
        "mean": 0.1,
        "rms": 0.5,
        "epsilon": 1.0,
    }
    plots.pulls(pull, "pgd")
    assert drawn[-1].axes[0].get_xlabel() == r"shift of jet_pt [$\sigma$]"  # sigma stays sigma


def unit_envelope(folder: Path) -> Envelope:
    spec = parse_spec(
        {
            **base_spec(),
            "envelope": {
                "x": {
                    **base_spec()["envelope"]["x"],
                    "jet_pt": {"relative": 0.02, "min": 0.0, "unit": "GeV"},
                    "jet_eta": {"absolute": 0.05, "min": -2.5, "max": 2.5, "unit": " "},
                }
            },
        },
        folder / "robustness.toml",
    )
    assert spec.envelope["x"]["jet_pt"].unit == "GeV"
    assert spec.envelope["x"]["jet_eta"].unit is None  # a blank unit is no unit
    return Envelope.from_spec(spec)


def test_units_in_messages_that_quote_feature_values(model_dir: Path) -> None:
    envelope = unit_envelope(model_dir)
    assert envelope.inputs["x"].units == ("GeV", None, None, None)
    text = bounds_message({("x", "jet_pt"): (3, -1.5), ("x", "jet_eta"): (1, 2.7)}, envelope, True)
    assert "jet_pt 3 (min 0 GeV; extreme value -1.5 GeV)" in text
    assert "jet_eta 1 (min -2.5, max 2.5; extreme value 2.7)" in text
    nominal = {"x": torch.tensor([[50.0, 10.0, 0.1, 3.0]])}
    moved = {"x": torch.tensor([[51.0, 10.0, 0.1, 3.0]])}
    (entry,) = changed_entries(envelope, nominal, moved, 0)
    label, x0, x1, pull, unit = entry
    assert (label, x0, x1, unit) == ("jet_pt", 50.0, 51.0, " GeV") and pull == pytest.approx(1.0)


def record_with_histogram() -> dict[str, Any]:
    spec = CheckSpec(index=0, name="rate", type="fooling_rate", options={"attack": "pgd"})
    result = CheckResult("s.toml", "rate", "fooling_rate", True, "ok", {"fooling_rate": 0.1})
    record = check_record("/tmp/a.toml", spec, 0.1, result)
    record["attacks"] = {"pgd": {"histograms": [class_histogram()], "scan": [], "roc": None}}
    return record


def test_missing_mplhep_draws_with_matplotlib_and_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "_mplhep", lambda: None)
    outcome = write_report([record_with_histogram()], tmp_path, "test")
    (problem,) = outcome.problems
    assert problem.startswith("mplhep is not installed: plots drawn without the HEP style")
    assert 'pip install "pytest-robustcheck[report]"' in problem
    doc = json.loads((tmp_path / "report.json").read_text())
    (plot,) = doc["specs"][0]["plots"]
    assert (tmp_path / plot["file"]).read_bytes().startswith(PNG_MAGIC)
    assert doc["problems"] == [problem]


def test_events_to_detect_table_reads_the_check_figures() -> None:
    rows = events_to_detect_table(
        {
            "events_to_detect": 120.0,
            "events_to_detect/ks/class 0/jet_mass": 120.0,
            "events_to_detect/corr/all/(jet_pt, jet_mass)": None,
            "ks_min_pvalue": 0.3,
        }
    )
    assert rows == [
        {"test": "ks", "region": "class 0", "feature": "jet_mass", "events_to_detect": 120.0},
        {
            "test": "corr",
            "region": "all",
            "feature": "(jet_pt, jet_mass)",
            "events_to_detect": None,
        },
    ]


def test_particle_inputs_and_observables_in_the_report_data(tmp_path: Path) -> None:
    """Constituent features (padding left out) and observables, per class, as the check
    compares them; the fooled events' pulls over their real constituents."""
    from robustcheck.core import SpecRun
    from robustcheck.report.data import SpecReportData, check_plot_data
    from tests.test_invariance_observables import particle_doc, particle_folder

    folder = particle_folder(tmp_path)
    doc = particle_doc(observables={"function": "jetobs.py:observables"})
    doc["envelope"]["parts"]["pt"]["unit"] = "GeV"
    spec = parse_spec(doc, folder / "robustness.toml")
    run = SpecRun(spec, device="cpu")
    (result,) = run.run()
    found = check_plot_data(run, spec.checks[0], result.figures)["invariance"]
    mask = np.load(folder / "particles.npz")["mask"] > 0
    adv = run.adversaries("pgd")
    real = mask.sum()
    by_name = {h["feature"]: h for h in found["histograms"]}
    assert set(by_name) == {"pt", "eta", "phi", "sum_pt", "width", "n_above_5"}
    assert by_name["pt"]["unit"] == "GeV" and by_name["sum_pt"]["observable"] is True
    for name, per_event in (("pt", False), ("sum_pt", True)):
        classes = by_name[name]["classes"].values()
        total = sum(sum(c["reference"]["counts"]) + sum(c["attacked"]["counts"]) for c in classes)
        assert total == (len(mask) if per_event else real)
    rows = found["events_to_detect"]
    assert len(rows) == sum(k.startswith("events_to_detect/") for k in result.figures)
    pulls = {p["feature"]: p for p in SpecReportData(run).attack("pgd")["pulls"]}
    fooled = adv.fooled.numpy()
    assert pulls["pt"]["n_entries"] == mask[fooled].sum() and pulls["pt"]["unit"] == "GeV"
    assert pulls["eta"]["n_events"] == fooled.sum()


def test_a_failing_part_costs_only_that_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustcheck.core import SpecRun
    from robustcheck.report import data as report_data
    from tests.test_invariance_observables import particle_doc, particle_folder

    folder = particle_folder(tmp_path)
    run = SpecRun(parse_spec(particle_doc(), folder / "robustness.toml"), device="cpu")
    run.run()

    def broken(*args: Any) -> None:
        raise RuntimeError("no pulls today")

    monkeypatch.setattr(report_data, "pull_data", broken)
    found = report_data.SpecReportData(run)
    attack = found.attack("pgd")
    assert attack["pulls"] is None and attack["histograms"] and attack["discriminant"]
    (problem,) = found.problems
    assert problem.startswith("report data (pulls) of attack pgd in ")
    assert problem.endswith("RuntimeError: no pulls today")
