"""Tagger backend: ``torch.export`` programs saved as .pt2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustcheck.errors import ModelError
from robustcheck.taggers.base import TorchTagger


def load_exported(path: Path, input_names: list[str] | None = None, **kwargs: Any) -> TorchTagger:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(
            f"not a torch.export program: {exc}",
            file=path,
            field="model.path",
            fix="save with torch.export.save(torch.export.export(model, args), path)",
        ) from None
    names = input_names or list(program.graph_signature.user_inputs)
    return TorchTagger(program.module(), str(path), names, owned=True, **kwargs)
