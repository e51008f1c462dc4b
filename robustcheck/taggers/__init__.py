"""Tagger loaders: one module per backend, chosen by the model path's suffix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustcheck import registry
from robustcheck.errors import ModelError
from robustcheck.spec import Spec, is_import_path
from robustcheck.taggers.loaders import LOADERS as LOADERS  # re-exported

if TYPE_CHECKING:
    from robustcheck.taggers.base import Tagger


def load_tagger(spec: Spec) -> Tagger:
    """Load the spec's model with the backend its path calls for."""
    model = spec.model
    kwargs: dict[str, Any] = {
        "output": model.output,
        "scores": model.scores,
        "signal_class": model.signal_class,
        "input_names": list(model.input_names) if model.input_names else None,
    }
    if is_import_path(model.path):
        from robustcheck.taggers.torch_module import load_module

        weights = spec.base_dir / model.weights if model.weights else None
        tagger = load_module(model.path, weights, spec.base_dir, str(spec.path), **kwargs)
    else:
        path = spec.base_dir / model.path
        loader = registry.tagger_loaders().get(path.suffix)
        if loader is None:
            raise ModelError(
                f"no loader for `{path.suffix}` files",
                file=spec.path,
                field="model.path",
                fix=f"use one of {', '.join(registry.tagger_loaders())} or an import path "
                "pkg.module:factory",
            )
        tagger = loader.load()(path, **kwargs)
    tagger.bind(list(spec.data["nominal"].inputs), str(spec.path))
    if model.compile:
        from robustcheck.taggers.base import TorchTagger

        if not is_import_path(model.path) or not isinstance(tagger, TorchTagger):
            raise ModelError(
                f"compile = true applies to a torch module built by an import path "
                f"(pkg.module:factory), not to {model.path!r}",
                file=spec.path,
                field="model.compile",
                fix="remove compile = true (TorchScript and .pt2 files are graphs captured "
                "already; ONNX models run in robustcheck's own interpreter or onnxruntime)",
            )
        tagger.use_compile(str(spec.path))
    return tagger
