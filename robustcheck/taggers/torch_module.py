"""Tagger backend: a torch ``nn.Module`` built by a factory named ``pkg.module:factory``."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import torch

from robustcheck.errors import ModelError, exception_text
from robustcheck.taggers.base import TorchTagger


def forward_input_names(module: torch.nn.Module) -> list[str]:
    """Positional parameter names of ``module.forward`` (from the schema for TorchScript)."""
    if isinstance(module, torch.jit.ScriptModule):
        from robustcheck.taggers.torchscript import script_input_names

        return script_input_names(module)
    params = inspect.signature(module.forward).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def _forget_module_from_elsewhere(module_name: str, search_dir: Path) -> None:
    """A module next to this spec must not be served from another spec's folder's import.

    Two specs in different folders may both use ``model:build``; Python caches modules by
    name, so the second would silently get the first one's model.
    """
    top = module_name.split(".")[0]
    local = search_dir / top
    if not (local.with_suffix(".py").is_file() or (local / "__init__.py").is_file()):
        return
    cached = sys.modules.get(top)
    where = getattr(cached, "__file__", None)
    if cached is not None and (
        where is None or search_dir.resolve() not in Path(where).resolve().parents
    ):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]


def import_factory(target: str, search_dir: Path, source: str) -> Any:
    """Import ``pkg.module:attr``, looking in ``search_dir`` first (the spec's folder)."""
    module_name, _, attr = target.partition(":")
    _forget_module_from_elsewhere(module_name, search_dir)
    sys.path.insert(0, str(search_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        kind = "cannot import" if isinstance(exc, ImportError) else "error while importing"
        raise ModelError(
            f"{kind} `{module_name}`: {exception_text(exc)}",
            file=source,
            field="model.path",
            fix="put the module next to the spec or install its package",
        ) from None
    finally:
        sys.path.remove(str(search_dir))
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelError(
            f"`{module_name}` has no attribute `{attr}`", file=source, field="model.path"
        ) from None


def load_module(
    target: str, weights: Path | None, search_dir: Path, source: str, **kwargs: Any
) -> TorchTagger:
    """Build the module from its factory, load ``weights`` (a state_dict) if given."""
    factory = import_factory(target, search_dir, source)
    try:
        module = factory()
    except Exception as exc:
        raise ModelError(
            f"factory `{target}` failed: {exception_text(exc)}", file=source, field="model.path"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"factory `{target}` returned {type(module).__name__}, not an nn.Module",
            file=source,
            field="model.path",
        )
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"cannot load weights {weights.name}: {first}",
                file=source,
                field="model.weights",
                fix="save them with torch.save(model.state_dict(), path)",
            ) from None
    return wrap_module(module, source, owned=True, **kwargs)


def wrap_module(
    module: torch.nn.Module,
    source: str,
    *,
    owned: bool = False,
    input_names: list[str] | None = None,
    **kwargs: Any,
) -> TorchTagger:
    """A tagger around an in-memory module."""
    names = input_names or forward_input_names(module)
    return TorchTagger(module, source, names, owned=owned, **kwargs)
