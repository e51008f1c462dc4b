"""Observables computed from the model inputs: ``[observables] function = "jetobs.py:obs"``.

The function takes the inputs of a batch of events as the model sees them (a dict of torch
tensors by model input name, padded particle arrays and mask inputs included) and returns a
dict of per-event tensors (jet mass, width, pT sums...). The invariance check evaluates it on
the nominal and the attacked inputs and tests its outputs like features.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from robustcheck.errors import ModelError, SpecError, exception_text

FIELD = "observables.function"
BATCH = 65536  # events per call of the function

Observables = Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]


def load_observables(function: str, spec_path: Path) -> Observables:
    """The function ``file.py:name`` (next to the spec) or ``package.module:name`` names."""
    target, _, attr = function.rpartition(":")
    try:
        if target.endswith(".py"):
            file = spec_path.parent / target
            name = f"robustcheck_observables_{abs(hash(str(file.resolve())))}"
            loader = importlib.util.spec_from_file_location(name, file)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            sys.path.insert(0, str(spec_path.parent))
            try:
                module = importlib.import_module(target)
            finally:
                sys.path.remove(str(spec_path.parent))
    except Exception as exc:
        raise SpecError(
            f"cannot import the observables function {function!r}: {exception_text(exc)}",
            file=spec_path,
            field=FIELD,
            fix="put the file next to the spec, or install the module's package",
        ) from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise SpecError(
            f"{target} has no function {attr!r}",
            file=spec_path,
            field=FIELD,
            fix="name a function defined in that file or module",
        )
    return found


def evaluate_observables(
    function: Observables, inputs: Mapping[str, torch.Tensor], spec_path: Path, label: str
) -> dict[str, torch.Tensor]:
    """Per observable, a float64 CPU tensor with one value per event, in batches of events.

    ``label`` names the sample in messages ("nominal", "attacked")."""
    n = len(next(iter(inputs.values())))
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, BATCH):
        batch = {name: x[start : start + BATCH] for name, x in inputs.items()}
        size = len(next(iter(batch.values())))
        try:
            with torch.no_grad():
                out = function(batch)
        except Exception as exc:
            raise ModelError(
                f"the observables function failed on the {label} inputs "
                f"{ {k: tuple(v.shape) for k, v in batch.items()} }: {exception_text(exc)}",
                file=spec_path,
                field=FIELD,
            ) from None
        if not isinstance(out, Mapping) or not out:
            raise ModelError(
                f"the observables function returned {type(out).__name__}, not a dict of "
                "per-event tensors",
                file=spec_path,
                field=FIELD,
                fix='return e.g. {"jet_mass": mass, "jet_width": width}, one value per event',
            )
        for key, value in out.items():
            tensor = torch.as_tensor(value).detach().to("cpu", torch.float64)
            if tensor.ndim == 2 and tensor.shape[1] == 1:
                tensor = tensor[:, 0]
            if tensor.shape != (size,):
                raise ModelError(
                    f"observable {key!r} has shape {tuple(tensor.shape)} for {size} events",
                    file=spec_path,
                    field=FIELD,
                    fix="return one value per event (a tensor of shape (events,))",
                )
            parts.setdefault(key, []).append(tensor)
        if start and any(len(values) != len(parts[next(iter(out))]) for values in parts.values()):
            raise ModelError(
                f"the observables function returned {sorted(out)} for the events from {start} "
                f"but {sorted(parts)} before",
                file=spec_path,
                field=FIELD,
            )
    out = {key: torch.cat(values) for key, values in parts.items()}
    bad = [key for key, value in out.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise ModelError(
            f"observable {bad[0]!r} is not finite on the {label} inputs "
            f"({int((~torch.isfinite(out[bad[0]])).sum())} events)",
            file=spec_path,
            field=FIELD,
            fix="guard divisions and logarithms (e.g. by the number of real entries)",
        )
    return out


def stacked(values: Mapping[str, torch.Tensor]) -> tuple[tuple[str, ...], torch.Tensor]:
    """Names and an (events, observables) tensor."""
    names = tuple(values)
    return names, torch.stack([values[k] for k in names], dim=1)


def differentiable_observables(
    function: Observables, inputs: Mapping[str, torch.Tensor], spec_path: Path | None
) -> tuple[tuple[str, ...], torch.Tensor]:
    """Names and an (events, observables) tensor of ``function`` on ``inputs``, keeping the
    autograd graph (an attack's penalty follows its gradients), on the inputs' device and in
    their floating dtype. No host sync: only shapes are checked, not values."""
    dtype = next((x.dtype for x in inputs.values() if x.is_floating_point()), torch.float32)
    size = len(next(iter(inputs.values())))
    try:
        out = function(dict(inputs))
    except Exception as exc:
        raise ModelError(
            f"the observables function failed on the attack's inputs "
            f"{ {k: tuple(v.shape) for k, v in inputs.items()} }: {exception_text(exc)}",
            file=spec_path,
            field=FIELD,
        ) from None
    if not isinstance(out, Mapping) or not out:
        raise ModelError(
            f"the observables function returned {type(out).__name__}, not a dict of "
            "per-event tensors",
            file=spec_path,
            field=FIELD,
            fix='return e.g. {"jet_mass": mass, "jet_width": width}, one value per event',
        )
    columns = []
    for key, value in out.items():
        tensor = torch.as_tensor(value).to(dtype)
        if tensor.ndim == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.shape != (size,):
            raise ModelError(
                f"observable {key!r} has shape {tuple(tensor.shape)} for {size} events",
                file=spec_path,
                field=FIELD,
                fix="return one value per event (a tensor of shape (events,))",
            )
        columns.append(tensor)
    return tuple(out), torch.stack(columns, dim=1)
