"""The robustcheck command: run --report, init, schema; and the progress line."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scipy import stats as scipy_stats

from robustcheck.cli import main
from robustcheck.errors import SpecError
from robustcheck.report.progress import progress
from robustcheck.spec import load_spec, parse_spec
from tests.conftest import base_spec, write_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLES = Path(__file__).parents[1] / "examples" / "quickstart"


@pytest.fixture
def folder(tmp_path: Path, model_dir: Path) -> Path:
    for name in ("tagger.pt", "tagger.onnx", "data.npz"):
        shutil.copy(model_dir / name, tmp_path / name)
    return tmp_path


def test_run_writes_the_report(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = base_spec()
    doc["data"]["nominal"]["max_events"] = 800
    doc["checks"][0]["max"] = 1.0
    doc["checks"].append(
        {"name": "no shift", "type": "invariance", "attack": "pgd", "ks_min_pvalue": 0.0}
    )
    spec = write_spec(folder, doc, "cli.robust.toml")
    assert main(["run", str(spec), "--report", str(folder / "rep"), "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "2 passed, 0 failed, 0 errors in 1 spec" in out
    assert f"robustcheck report: {folder / 'rep' / 'report.html'}" in out
    report = json.loads((folder / "rep" / "report.json").read_text())
    assert report["command"].startswith("robustcheck run ")
    (entry,) = report["specs"]
    rate, shape = entry["checks"]
    assert rate["verdict"] == shape["verdict"] == "passed"
    k, n = rate["figures"]["n_fooled"], rate["figures"]["n_events"]
    assert n <= 800 and rate["figures"]["fooling_rate"] == pytest.approx(k / n)
    assert rate["figures"]["ci_high"] == pytest.approx(scipy_stats.beta.ppf(0.975, k + 1, n - k))
    assert rate["figures"]["seed"] == 5 == entry["attacks"]["pgd"]["seed"]
    assert entry["attacks"]["pgd"]["n_fooled"] == k
    # per movable feature (three) a histogram, a pull plot and the invariance check's
    # histogram, the discriminant and the ROC curves
    assert len(entry["plots"]) == 11
    page = (folder / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 11
    assert "<tr><td>no shift<details>" in page


def test_run_reports_model_errors_and_unwritable_report(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = base_spec()
    doc["inputs"]["x"]["features"] = ["a", "b", "c"]
    doc["envelope"]["x"] = {k: {"absolute": 1.0} for k in "abc"}
    spec = write_spec(folder, doc, "broken.robust.toml")
    (folder / "blocker").write_text("")
    assert main(["run", str(spec), "--report", str(folder / "blocker" / "rep")]) == 2
    captured = capsys.readouterr()
    assert "data error:" in captured.err and "names 3 features" in captured.err
    assert "ERROR" in captured.out and "0 passed, 0 failed, 1 errors" in captured.out
    assert f"cannot write the report to {folder / 'blocker' / 'rep'}" in captured.err


def test_init_writes_a_spec_that_validates(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = folder / "specs" / "robustness.toml"
    assert (
        main(["init", str(folder / "tagger.onnx"), str(folder / "data.npz"), "-o", str(target)])
        == 0
    )
    out = capsys.readouterr().out
    assert "TODO" in out
    text = target.read_text()
    # the model is evaluated as the spec wires it, and the figure written down
    assert re.search(r"^# this wiring gives AUC 0\.9\d\d ± 0\.0\d\d on 3,000 events \(", text, re.M)
    assert "robustcheck init: this wiring gives AUC 0.9" in out
    doc = tomllib.loads(text)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "tagger.onnx"))
    assert doc["model"] == {
        "path": "../tagger.onnx",
        "output": session.get_outputs()[0].name,
        "scores": "logits",
        "signal_class": 1,
    }
    assert doc["data"]["nominal"] == {"path": "../data.npz", "labels": "y", "inputs": {"x": "x"}}
    features = doc["inputs"]["x"]["features"]
    assert features == ["x_0", "x_1", "x_2", "x_3"]
    envelope = doc["envelope"]["x"]
    assert envelope["x_3"] == {"integer": True}  # n_const: Poisson counts in the data
    assert envelope["x_1"] == {"relative": 0.05, "min": 0.0}  # jet mass: non-negative
    assert envelope["x_2"] == {"relative": 0.05}  # jet eta: signed
    assert {c["type"] for c in doc["checks"]} == {"fooling_rate", "invariance"}
    assert text.count("# TODO") >= 5
    assert main(["validate", str(target)]) == 0
    assert "ok (2 checks, 1 attacks)" in capsys.readouterr().out
    assert (
        main(["init", str(folder / "tagger.onnx"), str(folder / "data.npz"), "-o", str(target)])
        == 2
    )
    err = capsys.readouterr().err
    assert "robustness.toml: the file exists already" in err and "--force" in err
    assert (
        main(
            [
                "init",
                str(folder / "tagger.onnx"),
                str(folder / "data.npz"),
                "-o",
                str(target),
                "--force",
            ]
        )
        == 0
    )


def test_init_stacks_the_columns_of_a_table(folder: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    table = pyarrow.table(
        {
            "pt": rng.uniform(500, 550, 50),
            "eta": rng.normal(size=50),
            "is_signal": rng.integers(0, 2, 50),
        }
    )
    pq.write_table(table, folder / "jets.parquet")
    target = folder / "jets.robust.toml"
    assert (
        main(["init", str(folder / "tagger.pt"), str(folder / "jets.parquet"), "-o", str(target)])
        == 0
    )
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
        name = torch.jit.load(str(folder / "tagger.pt")).forward.schema.arguments[1].name
    spec = load_spec(target)
    assert spec.data["nominal"].labels == "is_signal"
    assert spec.data["nominal"].inputs == {name: ("pt", "eta")}
    assert spec.inputs[name].features == ("pt", "eta")
    assert spec.envelope[name]["pt"].min == 0.0 and spec.envelope[name]["eta"].min is None


def test_init_without_labels_says_how_to_name_them(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(folder / "nolabels.npz", x=np.ones((10, 3), dtype=np.float32))
    assert (
        main(
            [
                "init",
                str(folder / "tagger.pt"),
                str(folder / "nolabels.npz"),
                "-o",
                str(folder / "x.robust.toml"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "nolabels.npz: found no labels array" in err and "fix: pass --labels NAME" in err


def schema_from_cli(capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def test_schema_accepts_real_specs_and_rejects_typos(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schema_from_cli(capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    specs = [tomllib.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.robust.toml"))]
    specs.append(base_spec())
    for doc in specs:
        assert list(validator.iter_errors(doc)) == []

    def errors(doc: dict) -> list[tuple[str, str]]:
        """Each schema error as (the offending key's JSON path, the message)."""
        return [(e.json_path, e.message) for e in validator.iter_errors(doc)]

    unexpected = "Additional properties are not allowed ({!r} was unexpected)"
    doc = base_spec()
    doc["checks"][0]["maxx"] = 0.1
    assert errors(doc) == [("$.checks[0]", unexpected.format("maxx"))]
    doc = base_spec()
    doc["attacks"]["pgd"]["stepz"] = 3
    assert errors(doc) == [("$.attacks.pgd", unexpected.format("stepz"))]
    doc = base_spec()
    doc["envelope"]["x"]["jet_pt"]["relativ"] = 0.1
    assert errors(doc) == [("$.envelope.x.jet_pt", unexpected.format("relativ"))]
    doc = base_spec()
    doc["attacks"]["pgd"]["steps"] = 3  # a pgd option that fgsm lacks
    doc["attacks"]["pgd"]["method"] = "fgsm"
    assert errors(doc) == [("$.attacks.pgd", unexpected.format("steps"))]
    doc = base_spec()
    doc["attacks"]["pgd"]["method"] = "pgdd"
    ((path, message),) = errors(doc)
    assert path == "$.attacks.pgd.method" and message.startswith("'pgdd' is not one of [")
    for method in ("fgsm", "pgd", "constrained_pgd", "random", "shift"):  # the known ones
        assert f"'{method}'" in message
    doc = base_spec()
    doc["checks"][0]["max"] = 1.5  # a fooling rate above 1
    assert errors(doc) == [("$.checks[0].max", "1.5 is greater than the maximum of 1.0")]
    doc = base_spec()
    doc["checks"] = [{"type": "invariance", "attack": "pgd"}]  # no threshold: never fails
    (error,) = validator.iter_errors(doc)
    assert (error.json_path, error.validator) == ("$.checks[0]", "anyOf")
    assert error.message.endswith("is not valid under any of the given schemas")
    # the alternatives: at least one threshold of the invariance check
    thresholds = [
        "ks_min_pvalue",
        "chi2_min_pvalue",
        "max_jsd",
        "max_correlation_change",
        "max_correlation_frobenius",
        "corr_min_pvalue",
        "control_region_events",
    ]
    assert sorted(e.message for e in error.context) == sorted(
        f"{key!r} is a required property" for key in thresholds
    )
    # the spec's own validation names the same thresholds for the same mistake
    with pytest.raises(SpecError) as info:
        parse_spec(doc, folder / "robustness.toml")
    assert (info.value.field, info.value.message) == (
        "checks[0]",
        "sets no threshold, so it could never fail",
    )
    assert info.value.fix == "set at least one of: " + ", ".join(thresholds)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustcheck.report import progress as progress_module

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # quiet in xdist workers
    monkeypatch.setattr(progress_module, "INTERVAL", 0.01)
    stream = FakeTerminal()
    with progress("attack pgd", stream):
        deadline = time.monotonic() + 5.0  # a busy machine may be slow to schedule the ticker
        while "attack pgd" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    text = stream.getvalue()
    assert "\r| attack pgd " in text and text.endswith("\r")
    quiet = io.StringIO()  # not a terminal
    with progress("attack pgd", quiet):
        time.sleep(0.3)
    assert quiet.getvalue() == ""
    monkeypatch.setenv("CI", "true")
    stream = FakeTerminal()
    with progress("attack pgd", stream):
        time.sleep(0.3)
    assert stream.getvalue() == ""


def test_threads_sets_torch_threads(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    doc = base_spec()
    doc["data"]["nominal"]["max_events"] = 200
    doc["checks"][0]["max"] = 1.0
    spec = write_spec(folder, doc, "threads.robust.toml")
    asked: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    assert main(["run", str(spec), "--threads", "1"]) == 0
    assert asked == [1]
    assert main(["run", str(spec), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert asked == [1]  # the refused value never reached torch
