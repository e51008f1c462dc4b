"""Errors from inside the user's model, and empty data, say what happened."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from robustcheck.cli import main
from robustcheck.core import SpecRun
from robustcheck.errors import DataError, ModelError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, write_spec

RAISING = """
import sys

import torch


class Raising(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        if bool(x[:, 0].max() > 100.0):
            raise ValueError("jet_pt above 100: the inputs look unscaled")
        return self.linear(x)


class Exiting(torch.nn.Module):
    def forward(self, x):
        sys.exit(3)


def scripted():
    return torch.jit.script(Raising())


def exiting():
    return Exiting()
"""


def module_spec(folder: Path, model_dir: Path, target: str, module: str) -> SpecRun:
    (folder / f"{module}.py").write_text(textwrap.dedent(RAISING))
    doc = base_spec(model=f"{module}:{target}")
    doc["model"].pop("weights", None)
    doc["data"]["nominal"]["path"] = str(model_dir / "data.npz")
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def test_the_text_of_an_exception_raised_inside_torchscript(
    tmp_path: Path, model_dir: Path
) -> None:
    # a factory may return a TorchScript module: its input names come from its schema
    run = module_spec(tmp_path, model_dir, "scripted", "raising_models")
    assert run.tagger.binding == ("x",)
    with pytest.raises(ModelError) as info:
        run.log_probs()
    text = str(info.value)
    assert "ValueError: jet_pt above 100: the inputs look unscaled" in text
    assert "raised inside the TorchScript model" in text
    assert "The following operation failed" not in text


def test_sys_exit_inside_the_model_is_a_model_error(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = module_spec(tmp_path, model_dir, "exiting", "exiting_models")
    with pytest.raises(ModelError, match=r"called sys.exit\(3\) while evaluating"):
        run.log_probs()
    spec = tmp_path / "exit.robust.toml"
    doc = base_spec(model="exiting_models:exiting")
    doc["model"].pop("weights", None)
    doc["data"]["nominal"]["path"] = str(model_dir / "data.npz")
    write_spec(tmp_path, doc, spec.name)
    assert main(["run", str(spec)]) == 2  # robustcheck's own code, not the model's 3
    assert "sys.exit(3)" in capsys.readouterr().err


def test_an_onnx_output_name_that_does_not_exist(tmp_path: Path, model_dir: Path) -> None:
    names = [
        o.name for o in onnxruntime.InferenceSession(str(model_dir / "tagger.onnx")).get_outputs()
    ]
    doc = base_spec(model=str(model_dir / "tagger.onnx"))
    doc["model"]["output"] = "score"
    doc["data"]["nominal"]["path"] = str(model_dir / "data.npz")
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(ModelError) as info:
        run.log_probs()
    assert f"the model has no output named 'score'; its outputs are {names}" in str(info.value)
    assert f"use output = {names[0]!r}" in str(info.value)


def test_a_sample_without_events_is_a_data_error(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    doc = base_spec()
    doc["data"]["nominal"]["path"] = "empty.npz"
    spec = write_spec(tmp_path, doc)
    with pytest.raises(DataError, match="the sample has no events"):
        SpecRun.from_path(spec, device="cpu").run()
    assert main(["run", str(spec)]) == 2
    assert "data error" in capsys.readouterr().err
    doc["data"]["nominal"]["chunk_size"] = 100  # streamed: the same error
    spec = write_spec(tmp_path, doc)
    with pytest.raises(DataError, match="the sample has no events"):
        SpecRun.from_path(spec, device="cpu").run()
