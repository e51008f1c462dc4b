"""[model] compile = true: torch.compile of an import-path module, refused for other models."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError, SpecError
from tests.conftest import base_spec, copy_models, write_spec


def _spec(model_dir: Path, folder: Path, model: str, **model_keys: object) -> Path:
    copy_models(model_dir, folder)
    doc = base_spec(model)
    doc["model"].update(model_keys)
    doc["data"]["nominal"]["max_events"] = 300
    return write_spec(folder, doc)


@pytest.mark.parametrize("model", ["tagger.pt", "tagger.pt2", "tagger.onnx"])
def test_compile_refused_for_files(model_dir: Path, tmp_path: Path, model: str) -> None:
    spec = _spec(model_dir, tmp_path, model, compile=True)
    with pytest.raises(ModelError) as caught:
        SpecRun.from_path(spec, device="cpu").tagger  # noqa: B018
    assert caught.value.field == "model.compile"
    assert model in str(caught.value)


def test_compile_must_be_a_bool(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        SpecRun.from_path(_spec(model_dir, tmp_path, "mlp:build", compile="yes"))
    assert "model.compile" in str(caught.value)


def test_compiled_run_gives_the_same_figures(model_dir: Path, tmp_path: Path) -> None:
    eager_dir, compiled_dir = tmp_path / "eager", tmp_path / "compiled"
    eager_dir.mkdir()
    compiled_dir.mkdir()
    eager = SpecRun.from_path(_spec(model_dir, eager_dir, "mlp:build"), device="cpu").run()
    spec = _spec(model_dir, compiled_dir, "mlp:build", compile=True)
    run = SpecRun.from_path(spec, device="cpu")
    compiled = run.run()
    assert run.tagger.compiled
    assert [r.figures["n_fooled"] for r in compiled] == [r.figures["n_fooled"] for r in eager]
    assert compiled[0].figures["fooling_rate"] == eager[0].figures["fooling_rate"]
    assert any("torch.compile" in line for line in compiled[0].details)
