"""The robustcheck command: same core, exit codes like pytest."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustcheck.cli import main
from tests.conftest import base_spec, write_spec


def test_run_passes_and_fails(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = base_spec()
    doc["checks"][0]["max"] = 1.0
    spec = write_spec(model_copy, doc, "cli_pass.robust.toml")
    assert main(["run", str(spec), "--device", "cpu"]) == 0
    assert "PASSED" in capsys.readouterr().out
    doc["checks"][0]["max"] = 0.0
    spec = write_spec(model_copy, doc, "cli_fail.robust.toml")
    assert main(["run", str(spec), "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "seed 3" in out


def test_validate_and_errors(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(model_copy, base_spec(), "cli_ok.robust.toml")
    assert main(["validate", str(spec)]) == 0
    assert "ok (1 checks, 1 attacks)" in capsys.readouterr().out
    doc = base_spec()
    doc["model"]["path"] = "missing.onnx"
    spec = write_spec(model_copy, doc, "cli_bad.robust.toml")
    assert main(["validate", str(spec)]) == 2
    assert "model.path: file not found" in capsys.readouterr().err
