"""Reports: the terminal summary, report.json, report.html and its plots, under xdist too."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from robustcheck.report import plots
from robustcheck.report.records import check_record
from robustcheck.report.terminal import lines, render
from robustcheck.report.writer import MAX_HISTOGRAMS, plotted_histograms, write_report
from robustcheck.result import CheckResult
from robustcheck.spec import CheckSpec
from tests.conftest import base_spec, write_spec

pytest_plugins = ["pytester"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHECK_NAMES = ("rate", "strict", "shape")
EVENTS = 1000


def report_spec() -> dict[str, Any]:
    """Two attacks (one with an epsilon scan), a passing, a failing and an invariance check."""
    doc = base_spec(scan=[0.5, 1.0])
    doc["data"]["nominal"]["max_events"] = EVENTS
    doc["data"]["alternative"] = {
        "path": "alt.npz",
        "labels": "y",
        "inputs": {"x": "x"},
        "max_events": EVENTS,
    }
    doc["attacks"]["fgsm"] = {"method": "fgsm", "epsilon": 1.0, "seed": 3}
    doc["checks"] = [
        {"name": "rate", "type": "fooling_rate", "attack": "pgd", "max": 1.0},
        {"name": "strict", "type": "fooling_rate", "attack": "fgsm", "max": 0.0},
        # same_events: the report's histograms compare the same events before and after
        {
            "name": "shape",
            "type": "invariance",
            "attack": "pgd",
            "max_correlation_change": 1.0,
            "compare_to": "same_events",
        },
    ]
    return doc


@pytest.fixture
def project(pytester: pytest.Pytester, model_dir: Path) -> pytest.Pytester:
    for name in ("tagger.pt", "data.npz", "alt.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    write_spec(pytester.path, report_spec())
    return pytester


def summary_section(text: str) -> str:
    return text.split("robustcheck summary", 1)[1].split("short test summary", 1)[0]


def reference_scores(model_dir: Path, data: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and signal probabilities computed here, with torch alone."""
    import torch

    events = {key: value[:EVENTS] for key, value in np.load(model_dir / data).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
        model = torch.jit.load(str(model_dir / "tagger.pt"))
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(events["x"])), dim=1)[:, 1].double().numpy()
    return events["y"], p


def test_pytest_report_json_html_and_summary(project: pytest.Pytester, model_dir: Path) -> None:
    from sklearn.metrics import roc_auc_score

    # in a subprocess: an in-process run that first imports matplotlib would leave it
    # half-imported for later tests (pytester drops the modules imported inside it)
    result = project.runpytest_subprocess("--robustcheck", "--robustcheck-report=rep")
    result.assert_outcomes(passed=2, failed=1)
    summary = summary_section(result.stdout.str())
    for name in CHECK_NAMES:
        assert len(re.findall(rf"robustness\.toml(::|\s+){name}\b", summary)) == 1
    assert "2 passed, 1 failed, 0 errors in 1 spec" in summary
    result.stdout.fnmatch_lines(["robustcheck report: *rep*report.html"])

    doc = json.loads((project.path / "rep" / "report.json").read_text())
    (spec,) = doc["specs"]
    checks = {c["name"]: c for c in spec["checks"]}
    assert [c["name"] for c in spec["checks"]] == list(CHECK_NAMES)
    assert {n: c["verdict"] for n, c in checks.items()} == {
        "rate": "passed",
        "strict": "failed",
        "shape": "passed",
    }
    assert doc["summary"] == {"passed": 2, "failed": 1, "error": 0}

    # the fooling rate and its Clopper-Pearson interval, recomputed with scipy
    rate = checks["rate"]["figures"]
    k, n = rate["n_fooled"], rate["n_events"]
    assert rate["fooling_rate"] == pytest.approx(k / n)
    assert rate["ci_high"] == pytest.approx(scipy_stats.beta.ppf(0.975, k + 1, n - k))
    assert rate["seed"] == 7 and rate["threshold"] == 1.0
    assert checks["strict"]["threshold"] == "upper limit <= 0"
    assert checks["rate"]["comparisons"][0]["figure"] == pytest.approx(rate["ci_high"])

    # the epsilon scan: the point at the attack's own epsilon is the check's rate
    scan = {row["epsilon"]: row for row in spec["attacks"]["pgd"]["scan"]}
    assert sorted(scan) == [0.5, 1.0]
    assert scan[1.0]["n_fooled"] == k and scan[1.0]["n_events"] == n
    low = scan[0.5]
    assert low["ci_low"] == pytest.approx(
        scipy_stats.beta.ppf(0.025, low["n_fooled"], low["n_events"] - low["n_fooled"] + 1)
    )
    assert "scan" not in spec["attacks"]["fgsm"]["options"]

    # ROC curves against scikit-learn on scores computed here
    for sample, data in (("nominal", "data.npz"), ("alternative", "alt.npz")):
        labels, scores = reference_scores(model_dir, data)
        assert spec["roc"][sample]["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=2e-4)
    assert set(spec["roc"]) == {"nominal", "alternative"}
    assert 0.5 < spec["attacks"]["pgd"]["roc"]["auc"] < spec["roc"]["nominal"]["auc"]

    # histograms: the nominal counts are numpy's over the file's column
    x = np.load(model_dir / "data.npz")["x"][:EVENTS].astype(np.float64)
    hists = {h["feature"]: h for h in spec["attacks"]["pgd"]["histograms"]}
    assert set(hists) == {"jet_pt", "jet_mass", "jet_eta"}  # n_const is frozen
    for column, feature in enumerate(("jet_pt", "jet_mass", "jet_eta")):
        h = hists[feature]
        assert h["nominal"] == np.histogram(x[:, column], h["edges"])[0].tolist()
        assert sum(h["adversarial"]) == len(x) == h["n_entries"]
    shape = checks["shape"]["figures"]
    assert hists[shape["min_ks_feature"]]["ks_pvalue"] == pytest.approx(shape["min_ks_pvalue"])

    # what the figures rest on
    import torch

    assert doc["versions"]["torch"] == torch.__version__.split("+")[0]
    assert doc["versions"]["numpy"] == np.__version__
    assert doc["random_streams"] == "event-hash-1"  # robustcheck.event_random.SCHEME
    for entry, name in (
        (spec["model"], "tagger.pt"),
        (spec["data"]["nominal"], "data.npz"),
        (spec["data"]["alternative"], "alt.npz"),
    ):
        assert entry["sha256"] == hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    assert spec["data"]["nominal"]["n_events"] == len(x)
    assert all(s > 0 for s in doc["timings"]["checks"].values())
    assert doc["timings"]["attacks"][f"{spec['path']}::pgd"] > 0
    assert doc["problems"] == []

    # plots: one file per entry, every one embedded in the page
    files = [p["file"] for p in spec["plots"]]
    kinds = Counter(p["kind"] for p in spec["plots"])
    assert kinds == {
        "histogram": 6,  # per feature and plotted attack
        "pulls": 6,
        "discriminant": 2,  # per attack
        "invariance_histogram": 3,  # per feature of the invariance check
        "roc": 1,
        "scan": 1,
    }
    page = (project.path / "rep" / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(files)
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in embedded)
    for file in files:
        assert (project.path / "rep" / file).read_bytes().startswith(PNG_MAGIC)
    for name, verdict in (("rate", "PASSED"), ("strict", "FAILED"), ("shape", "PASSED")):
        row = re.search(rf"<tr><td>{name}<details>.*?</tr>", page, re.S)
        assert row is not None and f">{verdict}</span>" in row.group(0)

    # no folder of this machine in the report: paths are relative to the report folder
    root = str(project.path)
    raw = (project.path / "rep" / "report.json").read_text()
    assert root not in raw and root not in page
    assert spec["path"] == "../robustness.toml"
    assert (project.path / "rep" / spec["path"]).resolve() == project.path / "robustness.toml"

    # summary.md: the verdict table in Markdown, ready for a CI job summary
    markdown = (project.path / "rep" / "summary.md").read_text()
    assert root not in markdown
    assert markdown.startswith("## robustcheck: ❌ 2 passed, 1 failed, 0 errors in 1 spec")
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert rows[0] == "| verdict | spec | check | figure | threshold | attack |"
    assert len(rows) == 1 + len(CHECK_NAMES)
    strict_row = next(r for r in rows if "| strict |" in r)
    assert strict_row.startswith("| ❌ FAILED | `../robustness.toml` | strict |")
    assert "| upper limit <= 0 | fgsm |" in strict_row
    assert "nominal AUC" in markdown and "report.html" in markdown


def test_summary_under_xdist_lists_each_check_once(project: pytest.Pytester) -> None:
    doc = report_spec()
    doc["data"]["nominal"]["max_events"] = 600
    doc["data"]["alternative"]["max_events"] = 600
    doc["attacks"]["pgd"].pop("scan")
    write_spec(project.path, doc)
    result = project.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "--robustcheck", "--robustcheck-report=rep"
    )
    result.assert_outcomes(passed=2, failed=1)
    summary = summary_section(result.stdout.str())
    for name in CHECK_NAMES:
        assert len(re.findall(rf"robustness\.toml(::|\s+){name}\b", summary)) == 1, summary
    report = json.loads((project.path / "rep" / "report.json").read_text())
    (spec,) = report["specs"]
    assert sorted(c["name"] for c in spec["checks"]) == sorted(CHECK_NAMES)
    assert set(spec["attacks"]) == {"pgd", "fgsm"}
    assert spec["roc"]["nominal"]["n_events"] == 600
    page = (project.path / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(spec["plots"]) == 18


def test_unwritable_report_folder_keeps_a_passing_run_passing(project: pytest.Pytester) -> None:
    doc = report_spec()
    doc["checks"] = doc["checks"][:1]
    doc["data"]["nominal"]["max_events"] = 500
    write_spec(project.path, doc)
    (project.path / "blocker").write_text("a file where the report folder should be")
    result = project.runpytest("--robustcheck", "--robustcheck-report=blocker/rep")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["robustcheck report: cannot write the report to *blocker*rep: *"])
    assert "Traceback" not in result.stdout.str()


def record(name: str, passed: bool | None, index: int = 0, **figures: Any) -> dict[str, Any]:
    check = CheckSpec(index, name, "fooling_rate", {"attack": "pgd", "max": 0.1})
    if passed is None:
        return check_record("/specs/a.robust.toml", check, 1.0, error="model error: broken")
    result = CheckResult(
        "/specs/a.robust.toml",
        name,
        "fooling_rate",
        passed,
        "summary",
        figures=figures,
        attack="pgd eps=1 sigma, seed 1",
    )
    return check_record("/specs/a.robust.toml", check, 1.5, result=result)


def figures(k: int, n: int) -> dict[str, Any]:
    low = scipy_stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    high = scipy_stats.beta.ppf(0.975, k + 1, n - k)
    return {
        "fooling_rate": k / n,
        "ci_low": low,
        "ci_high": high,
        "n_events": n,
        "n_fooled": k,
        "threshold": 0.1,
        "confidence": 0.95,
    }


def test_terminal_table_and_narrow_layout() -> None:
    records = [
        record("first", True, 0, **figures(3, 100)),
        record("second", False, 1, **figures(30, 100)),
        record("third", None, 2),
    ]
    wide = render(records, width=200, root=Path("/specs"))
    assert wide.splitlines()[0].split() == [
        "SPEC",
        "CHECK",
        "FIGURE",
        "THRESHOLD",
        "VERDICT",
        "ATTACK",
    ]
    row = next(line for line in wide.splitlines() if "second" in line)
    assert row.split()[0] == "a.robust.toml" and "FAILED" in row and row.endswith("pgd")
    assert "0.3 (95% CL" in row and "upper limit <= 0.1" in row
    assert "model error: broken" in next(line for line in wide.splitlines() if "third" in line)
    assert wide.splitlines()[-1] == "1 passed, 1 failed, 1 errors in 1 spec"
    narrow = lines(records, width=60, root=Path("/specs"))
    assert [line.verdict.strip() for line in narrow if line.verdict] == [
        "PASSED",
        "FAILED",
        "ERROR",
    ]
    assert narrow[0].text() == "PASSED  a.robust.toml::first"
    assert narrow[1].text().startswith(" " * 8 + "0.03 (95% CL ")
    assert narrow[1].text().endswith("upper limit <= 0.1  attack pgd")


def test_broken_plot_is_named_and_the_page_is_still_written(tmp_path: Path) -> None:
    good = record("rate", True, **figures(3, 100))
    edges = np.linspace(0.0, 1.0, 5).tolist()
    histogram = {
        "input": "x",
        "feature": "jet_mass",
        "edges": edges,
        "nominal": [1, 2, 3, 4],
        "adversarial": [1, 2, 3, 4],
        "n_entries": 10,
        "ks_pvalue": 0.5,
        "chi2_pvalue": 0.4,
    }
    broken = {**histogram, "feature": "jet_pt", "adversarial": [1, 2]}
    good["attacks"] = {"pgd": {"histograms": [histogram, broken], "scan": [], "roc": None}}
    outcome = write_report([good], tmp_path / "out", "test")
    (problem,) = outcome.problems
    assert re.match(
        r"plot plots/a-\w+__pgd__x_jet_pt\.png failed: ValueError: 5 bin edges", problem
    )
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "x_jet_pt.png</code>" in page
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["problems"] == [problem]
    assert [p.get("error", "") != "" for p in doc["specs"][0]["plots"]] == [False, True]


def test_report_without_matplotlib_still_writes_json_and_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    outcome = write_report([record("rate", True, **figures(3, 100))], tmp_path, "test")
    assert outcome.problems == ["no plots in the report: matplotlib is not installed"]
    assert {p.name for p in outcome.written} == {"report.json", "report.html", "summary.md"}
    assert ">PASSED</span>" in (tmp_path / "report.html").read_text()


def test_headline_and_comparisons_of_invariance_and_resilience() -> None:
    invariance = CheckResult(
        "s",
        "c",
        "invariance",
        False,
        "",
        figures={
            "min_ks_pvalue": 0.2,
            "min_ks_feature": "jet_pt",
            "correlation_change": 0.05,
            "threshold_ks_min_pvalue": 0.01,
            "threshold_max_correlation_change": 0.02,
        },
    )
    found = invariance.comparisons()
    assert [(c.label, c.figure, c.op, c.threshold, c.holds) for c in found] == [
        ("min KS p-value", 0.2, ">=", 0.01, True),
        ("max correlation change", 0.05, "<=", 0.02, False),
    ]
    assert invariance.headline() == ("max correlation change 0.05", "<= 0.02")
    resilience = CheckResult(
        "s",
        "c",
        "resilience",
        True,
        "",
        figures={
            "auc_nominal": 0.9,
            "auc_alternative": 0.88,
            "auc_change_percent": 2.2,
            "threshold": 3.0,
            "min_auc": 0.85,
        },
    )
    assert resilience.headline() == ("AUC change (%) 2.2", "<= 3")
    assert [c.holds for c in resilience.comparisons()] == [True, True]


def test_many_features_plot_the_most_changed_in_feature_order() -> None:
    pvalues = np.random.default_rng(1).uniform(size=MAX_HISTOGRAMS + 6)
    histograms = [{"feature": f"f{i}", "ks_pvalue": float(p)} for i, p in enumerate(pvalues)]
    histograms[3]["ks_pvalue"] = None  # no figure: plotted last
    pvalues[3] = 2.0
    expected = sorted(np.argsort(pvalues)[:MAX_HISTOGRAMS])
    assert [h["feature"] for h in plotted_histograms(histograms)] == [f"f{i}" for i in expected]
    assert plotted_histograms(histograms[:5]) == histograms[:5]


def test_matplotlib_is_imported_only_to_draw() -> None:
    code = (
        "import sys, robustcheck.cli, robustcheck.plugin, robustcheck.report.writer\n"
        "from robustcheck.report import records, terminal\n"
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pareto_frontier_of_specs_on_the_same_data(model_copy: Path, tmp_path: Path) -> None:
    import json

    import numpy as np

    from robustcheck.cli import main
    from tests.conftest import base_spec, make_events, write_spec

    models = model_copy  # specs and data next to copies of the models, not in model_dir
    np.savez(models / "pareto_alt.npz", **make_events(3000, seed=21, multiplicity_gap=8.0))
    paths = []
    for name, model in (("trained", "tagger.pt"), ("untrained", "mlp:build")):
        doc = base_spec(model=model)
        if model == "mlp:build":  # an untrained tagger: below chance, so without the gates
            del doc["model"]["weights"]
            doc["model"]["skip_gates"] = ["auc", "accuracy"]
        doc["data"]["alternative"] = {"path": "pareto_alt.npz", "labels": "y", "inputs": {"x": "x"}}
        doc["checks"] = [{"type": "resilience", "max_auc_change_percent": 100.0}]
        paths.append(str(write_spec(models, doc, f"pareto_{name}.robust.toml")))
    report = tmp_path / "report"
    assert main(["run", *paths, "--report", str(report), "--device", "cpu"]) == 0
    document = json.loads((report / "report.json").read_text())
    (group,) = document["pareto"]
    points = {p["name"]: p for p in group["points"]}
    assert set(points) == {"tagger.pt", "mlp:build"}
    for p in points.values():  # on the front exactly when no other point dominates it
        others = [q for q in points.values() if q is not p]
        dominated = any(
            q["auc"] >= p["auc"]
            and q["resilience"] <= p["resilience"]
            and (q["auc"] > p["auc"] or q["resilience"] < p["resilience"])
            for q in others
        )
        assert p["on_front"] == (not dominated)
    assert (report / group["file"]).is_file()
    html = (report / "report.html").read_text()
    assert "AUC / resilience Pareto frontier" in html
    assert html.count("data:image/png;base64,") >= 1 + 2  # the frontier and each spec's ROC


def test_relative_paths_rewrite_only_paths(tmp_path: Path) -> None:
    from robustcheck.report.writer import relative_paths

    folder = tmp_path / "report"
    spec = tmp_path / "specs" / "a.robust.toml"
    document = {
        "path": str(spec),
        f"{spec}::rate": 1.0,
        "texts": [
            f"spec error: {spec}: checks[0]: unknown key",
            "ratio (a+b)/c and 1/2 of https://example.org/x and sigma/2",
            "/nonexistent-root/x/y stays",
            f"folder {tmp_path}/specs/",
        ],
        "number": 3,
    }
    out = relative_paths(document, folder)
    assert out["path"] == "../specs/a.robust.toml"
    assert out["../specs/a.robust.toml::rate"] == 1.0
    assert out["texts"] == [
        "spec error: ../specs/a.robust.toml: checks[0]: unknown key",
        "ratio (a+b)/c and 1/2 of https://example.org/x and sigma/2",
        "/nonexistent-root/x/y stays",
        "folder ../specs/",
    ]
    assert out["number"] == 3
