"""Reports of partial runs say so (report.json, report.html, terminal), hold no plots of checks
that did not run, and show each spec's nominal performance when the records carry it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustcheck.report import plots
from robustcheck.report.json import build, partial
from robustcheck.report.records import check_record
from robustcheck.report.terminal import render
from robustcheck.report.writer import LOCK_NAME, write_report
from robustcheck.result import CheckResult
from robustcheck.spec import CheckSpec

SPEC = "/specs/a.robust.toml"
NOMINAL = {
    "auc": 0.8712,
    "auc_error": 0.0041,
    "accuracy": 0.8031,
    "balanced_accuracy": 0.7904,
    "majority_rate": 0.5,
    "n_events": 2000,
    "skipped_gates": [],
    "warnings": ["the alternative sample has 3 events of class 1"],
}


def histogram(feature: str) -> dict[str, Any]:
    return {
        "input": "x",
        "feature": feature,
        "edges": np.linspace(0.0, 1.0, 5).tolist(),
        "nominal": [1, 2, 3, 4],
        "adversarial": [2, 2, 3, 3],
        "n_entries": 10,
        "ks_pvalue": 0.5,
        "chi2_pvalue": 0.4,
    }


def record(
    name: str, attack: str, index: int, nominal: dict[str, Any] | None = None
) -> dict[str, Any]:
    check = CheckSpec(index, name, "fooling_rate", {"attack": attack, "max": 0.1})
    figures = {
        "fooling_rate": 0.03,
        "ci_low": 0.01,
        "ci_high": 0.08,
        "n_events": 100,
        "n_fooled": 3,
        "threshold": 0.1,
        "confidence": 0.95,
    }
    result = CheckResult(
        SPEC, name, "fooling_rate", True, "summary", figures=figures, attack=f"{attack} eps=1 sigma"
    )
    out = check_record(SPEC, check, 1.0, result=result)
    out["attacks"] = {
        attack: {
            "histograms": [histogram("jet_pt"), histogram("jet_mass")],
            "scan": [],
            "roc": None,
        }
    }
    if nominal is not None:
        out["nominal"] = nominal
    return out


def test_partial_counts_what_ran_of_what_was_collected() -> None:
    records = [record("rate", "pgd", 0)]
    assert partial({SPEC: ["rate"]}, records) is None
    info = partial(
        {SPEC: ["rate", "strict"], "/specs/b.robust.toml": ["other"]},
        records,
        reason="2 deselected (-k, -m or --deselect)",
    )
    assert info == {
        "ran": 1,
        "collected": 3,
        "interrupted": False,
        "reason": "2 deselected (-k, -m or --deselect)",
        "not_run": [f"{SPEC}::strict", "/specs/b.robust.toml::other"],
    }
    stopped = partial({SPEC: ["rate"]}, records, interrupted="KeyboardInterrupt")
    assert stopped is not None and stopped["interrupted"] and stopped["ran"] == 1
    assert stopped["reason"] == "interrupted: KeyboardInterrupt"
    text = render(records, width=200, root=Path("/specs"), partial=info)
    assert text.splitlines()[-1] == (
        "robustcheck: 1 of 3 checks ran (2 deselected (-k, -m or --deselect))"
    )


@pytest.mark.skipif(bool(plots.unavailable()), reason="matplotlib is not installed")
def test_stale_plots_are_removed_and_the_page_says_partial(tmp_path: Path) -> None:
    folder = tmp_path / "rep"
    whole = write_report([record("rate", "pgd", 0), record("strict", "fgsm", 1)], folder, "t")
    assert whole.problems == [] and whole.removed == []
    first = {p.name for p in (folder / "plots").glob("*.png")}
    assert len(first) == 4 and sum("__fgsm__" in name for name in first) == 2
    mine = folder / "plots" / "my_own_figure.png"  # not robustcheck's: never removed
    mine.write_bytes(b"keep")
    doc = json.loads((folder / "report.json").read_text())
    assert doc["partial"] is None
    assert "partial run" not in (folder / "report.html").read_text()

    records = [record("rate", "pgd", 0)]
    info = partial({SPEC: ["rate", "strict"]}, records, reason="1 deselected (-k)")
    outcome = write_report(records, folder, "t -k rate", info)
    assert sorted(p.name for p in outcome.removed) == sorted(n for n in first if "__fgsm__" in n)
    left = {p.name for p in (folder / "plots").glob("*.png")}
    assert left == {n for n in first if "__pgd__" in n} | {mine.name}
    doc = json.loads((folder / "report.json").read_text())
    assert list(doc)[:2] == ["format", "partial"]  # at the top
    assert doc["partial"] == info
    assert doc["problems"] == ["partial run: 1 of 2 checks ran (1 deselected (-k))"]
    files = [p["file"] for s in doc["specs"] for p in s["plots"]]
    assert {Path(f).name for f in files} == left - {mine.name}
    page = (folder / "report.html").read_text()
    assert '<div class="partial">partial run: 1 of 2 checks ran (1 deselected (-k))' in page
    assert "<code>/specs/a.robust.toml::strict</code>" in page
    assert page.count("1 of 2 checks ran") == 1  # the banner, not a second problem line
    assert (folder / LOCK_NAME).exists()
    assert not list(folder.rglob("*.tmp"))


def test_interrupted_banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    records = [record("rate", "pgd", 0)]
    info = partial({SPEC: ["rate", "strict"]}, records, interrupted="KeyboardInterrupt")
    write_report(records, tmp_path, "t", info)
    page = (tmp_path / "report.html").read_text()
    assert '<div class="partial">interrupted run: 1 of 2 checks ran (interrupted: ' in page
    assert json.loads((tmp_path / "report.json").read_text())["partial"]["interrupted"] is True


def test_nominal_performance_in_terminal_json_and_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [record("rate", "pgd", 0, NOMINAL), record("strict", "fgsm", 1, NOMINAL)]
    text = render(records, width=200, root=Path("/specs")).splitlines()
    where = "robustcheck: a.robust.toml: "
    assert [line for line in text if line.startswith(where)] == [
        f"{where}nominal AUC 0.871 ± 0.004, accuracy 0.803 (balanced 0.790, majority class "
        "0.500), 2,000 events",
        f"{where}warning: the alternative sample has 3 events of class 1",
    ]
    skipped = {**NOMINAL, "skipped_gates": ["min_auc", "min_accuracy"], "auc_error": None}
    (line, _) = [
        x
        for x in render([record("rate", "pgd", 0, skipped)], 200, Path("/specs")).splitlines()
        if x.startswith(where)
    ]
    assert line == (
        f"{where}nominal AUC 0.871, accuracy 0.803 (balanced 0.790, majority class "
        "0.500), 2,000 events, skipped gates: min_auc, min_accuracy"
    )

    (spec,) = build(records, "t")["specs"]
    assert spec["nominal"] == NOMINAL
    assert all("nominal" not in check for check in spec["checks"])

    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    write_report(records, tmp_path, "t")
    page = (tmp_path / "report.html").read_text()
    assert (
        '<p class="nominal">nominal AUC 0.871 ± 0.004, accuracy 0.803 (balanced 0.790, '
        "majority class 0.500), 2,000 events</p>"
    ) in page
    assert "the alternative sample has 3 events of class 1" in page


def test_records_without_nominal_render_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [record("rate", "pgd", 0)]
    records[0].pop("nominal", None)  # a record from before the field existed
    assert "nominal" not in render(records, width=200)
    (spec,) = build(records, "t")["specs"]
    assert "nominal" not in spec
    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    write_report(records, tmp_path, "t")
    assert 'class="nominal"' not in (tmp_path / "report.html").read_text()
