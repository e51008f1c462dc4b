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


def test_compile_failure_names_the_key(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a missing C++ compiler gives: torch.compile fails on the first call. (Compiling
    for real takes about a minute on CPU; benchmarks/compile_speed.py checks that a compiled
    run fools the same events.)"""
    import torch

    def no_compiler(module: torch.nn.Module) -> object:
        def run(*args: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    run = SpecRun.from_path(_spec(model_dir, tmp_path, "mlp:build", compile=True), device="cpu")
    with pytest.raises(ModelError) as caught:
        run.run()
    assert caught.value.field == "model.compile"
    assert "No working C++ compiler" in str(caught.value)
