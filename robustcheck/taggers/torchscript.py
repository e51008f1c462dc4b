"""Tagger backend: TorchScript files (``torch.jit.save``), .pt or .ts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from robustcheck.errors import ModelError
from robustcheck.taggers.base import TorchTagger


def load_torchscript(
    path: Path, input_names: list[str] | None = None, **kwargs: Any
) -> TorchTagger:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, still common
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        hint = (
            "a .pt file holding a state_dict or a pickled module is not TorchScript: "
            "export with torch.jit.script/trace and torch.jit.save, or use "
            'path = "pkg.mod:factory" with weights = "state.pt"'
        )
        raise ModelError(
            f"not a TorchScript file ({type(exc).__name__})",
            file=path,
            field="model.path",
            fix=hint,
        ) from None
    names = input_names or script_input_names(module)
    return TorchTagger(module, str(path), names, owned=True, **kwargs)


def script_input_names(module: torch.jit.ScriptModule) -> list[str]:
    """Input names of a TorchScript module's ``forward``, read from its schema."""
    return [a.name for a in module.forward.schema.arguments[1:]]
