"""``robustcheck init MODEL DATA``: a starting spec written from what the files hold.

The data file's arrays give the labels, the model inputs and the number of features of each;
an ONNX (or TorchScript, torch.export) model gives its input names. The envelope is a relative
placeholder to fill in: every line that needs the user's knowledge says TODO.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustcheck.errors import DataError, ModelError, SpecError
from robustcheck.spec import is_import_path

SAMPLE_EVENTS = 20000
LABEL_NAMES = ("label", "labels", "y", "target", "targets", "truth", "is_signal", "class")
PLACEHOLDER_RELATIVE = 0.05
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class ArrayInfo:
    """One array, column or branch of the data file, from its first events."""

    name: str
    values: np.ndarray  # (events, ...) numeric; jagged arrays padded with NaN
    jagged: bool = False
    longest: int = 0

    @property
    def per_event_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    def column_stats(self) -> list[dict[str, Any]]:
        """Per feature (last axis, or the array itself when 1-D): range and integrality."""
        width = 1 if self.values.ndim == 1 else self.values.shape[-1]
        columns = self.values.reshape(-1, width)
        out = []
        for column in columns.T:
            real = column[np.isfinite(column)]
            out.append(
                {
                    "min": float(real.min()) if real.size else 0.0,
                    "max": float(real.max()) if real.size else 0.0,
                    "integer": bool(real.size and np.all(np.round(real) == real)),
                    "constant": bool(real.size == 0 or real.min() == real.max()),
                }
            )
        return out


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _string(value: str) -> str:
    return json.dumps(value)


def list_arrays(path: Path, tree: str | None) -> tuple[list[str], str | None]:
    """Names of the arrays a data file holds (and the tree, for ROOT files)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return list(archive.files), None
        if suffix == ".npy":
            return list(np.load(path, mmap_mode="r").dtype.names or ()), None
        if suffix in (".h5", ".hdf5"):
            import h5py

            names: list[str] = []
            with h5py.File(path, "r") as handle:
                handle.visititems(
                    lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
                )
            return names, None
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names), None
        if suffix == ".root":
            import uproot

            with uproot.open(path) as handle:
                found = handle.keys(filter_classname=["TTree", "ROOT::RNTuple"], cycle=False)
                trees = list(dict.fromkeys(found))
                if tree is None:
                    if len(trees) != 1:
                        raise DataError(
                            f"the file holds {len(trees)} trees: {', '.join(trees) or 'none'}",
                            file=path,
                            fix="pass --tree NAME",
                        )
                    tree = trees[0]
                return list(handle[tree].keys()), tree
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(
            f"reading `{path.suffix}` files needs a package that is not installed ({exc.name})",
            file=path,
            fix='pip install "pytest-robustcheck[hdf5,parquet,root]"',
        ) from None
    except Exception as exc:
        raise DataError(f"cannot list the arrays of the file: {exc}", file=path) from None
    raise DataError(
        f"no reader for `{path.suffix}` files",
        file=path,
        fix="use .npz, .npy, .h5, .hdf5, .parquet or .root",
    )


def inspect_data(path: Path, tree: str | None = None) -> tuple[list[ArrayInfo], str | None]:
    """The numeric arrays of a data file, each read for its first events."""
    from robustcheck.data import READERS, Jagged

    names, tree = list_arrays(path, tree)
    if not names:
        raise DataError("the file holds no arrays", file=path)
    arrays = READERS[path.suffix.lower()].load()(path, names, tree, max_events=SAMPLE_EVENTS)
    out = []
    for name in names:
        value = arrays.get(name)
        if isinstance(value, Jagged):
            longest = int(value.counts.max()) if len(value) else 0
            if not np.issubdtype(value.dtype, np.number) or longest == 0:
                continue
            padded = value.padded(longest, value=0).astype(np.float64)
            padded[~value.mask(longest).astype(bool)] = np.nan
            out.append(ArrayInfo(name, padded, jagged=True, longest=longest))
        elif (
            isinstance(value, np.ndarray)
            and np.issubdtype(value.dtype, np.number)
            and value.ndim >= 1
            and len(value)
        ):
            out.append(ArrayInfo(name, value.astype(np.float64)))
    return out, tree


def pick_labels(arrays: list[ArrayInfo], labels: str | None, path: Path) -> ArrayInfo:
    """The labels array: as given, else a 1-D array of a few integer classes."""
    by_name = {a.name: a for a in arrays}
    if labels is not None:
        if labels not in by_name:
            raise DataError(
                f"no numeric array `{labels}` in the file; it holds {', '.join(by_name) or 'none'}",
                file=path,
                fix="pass --labels with one of those names",
            )
        return by_name[labels]
    candidates = [
        a
        for a in arrays
        if a.values.ndim == 1
        and not a.jagged
        and a.column_stats()[0]["integer"]
        and 2 <= len(np.unique(a.values)) <= 10
        and a.values.min() >= 0
    ]
    if not candidates:
        raise DataError(
            "found no labels array (one integer class index per event)",
            file=path,
            fix="pass --labels NAME",
        )
    known = [a for a in candidates if a.name.rsplit("/", 1)[-1].lower() in LABEL_NAMES]
    return (known or candidates)[0]


@dataclass
class ModelInfo:
    inputs: list[str] | None
    outputs: list[str]
    note: str = ""


def inspect_model(path: str, base: Path) -> ModelInfo:
    """Input and output names of a model file, when the format records them."""
    if is_import_path(path):
        return ModelInfo(None, [], "an import path: input names are not known")
    file = base / path
    if not file.exists():
        raise ModelError(f"model file not found: {file}", fix="check the path")
    suffix = file.suffix.lower()
    try:
        if suffix == ".onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            return ModelInfo(
                [n.name for n in session.get_inputs()], [n.name for n in session.get_outputs()]
            )
        if suffix in (".pt", ".ts"):
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # recent torch deprecates TorchScript
                module = torch.jit.load(str(file), map_location="cpu")
            arguments = module.forward.schema.arguments[1:]  # skip self
            return ModelInfo([a.name for a in arguments], [])
        if suffix == ".pt2":
            import torch
            from torch.export.graph_signature import InputKind

            program = torch.export.load(str(file))
            specs = program.graph_signature.input_specs
            return ModelInfo([s.arg.name for s in specs if s.kind == InputKind.USER_INPUT], [])
    except ImportError as exc:
        return ModelInfo(None, [], f"cannot read input names ({exc.name} is not installed)")
    except Exception as exc:
        raise ModelError(f"cannot read the model: {exc}", file=file) from None
    raise ModelError(
        f"no loader for `{file.suffix}` files",
        file=file,
        fix="use .onnx, TorchScript .pt/.ts, .pt2 or an import path pkg.module:factory",
    )


@dataclass
class InputPlan:
    """One model input of the starting spec."""

    name: str
    source: str | list[str]
    features: list[str]
    stats: list[dict[str, Any]]
    jagged_longest: int = 0


def plan_inputs(arrays: list[ArrayInfo], labels: ArrayInfo, model: ModelInfo) -> list[InputPlan]:
    """Map model inputs to arrays: by name, else the multi-feature arrays, else one input
    stacking every per-event column."""
    n_events = len(labels.values)
    usable = [a for a in arrays if a is not labels and len(a.values) == n_events]
    by_name = {a.name: a for a in usable}
    wide = [a for a in usable if a.values.ndim >= 2 and not a.jagged]
    columns = [a for a in usable if a.values.ndim == 1]
    jagged = [a for a in usable if a.jagged and a.values.ndim == 2]

    def whole(name: str, array: ArrayInfo) -> InputPlan:
        n = array.values.shape[-1]
        short = array.name.rsplit("/", 1)[-1]
        return InputPlan(name, array.name, [f"{short}_{i}" for i in range(n)], array.column_stats())

    def stacked(name: str, group: list[ArrayInfo]) -> InputPlan:
        values = np.stack([a.values for a in group], axis=-1)
        longest = max(a.longest for a in group)
        info = ArrayInfo(name, values)
        return InputPlan(
            name,
            [a.name for a in group],
            [a.name.rsplit("/", 1)[-1] for a in group],
            info.column_stats(),
            longest,
        )

    names = model.inputs
    if names and all(n in by_name and by_name[n].values.ndim >= 2 for n in names):
        return [whole(n, by_name[n]) for n in names]
    plans: list[InputPlan] = []
    if wide:
        plans = [whole(a.name.rsplit("/", 1)[-1], a) for a in wide]
    elif columns or jagged:
        if columns:
            plans.append(stacked("jets" if jagged else "x", columns))
        if jagged:
            plans.append(stacked("particles", jagged))
    if not plans:
        raise DataError(
            "found no numeric input arrays besides the labels",
            file=None,
            fix="write the spec by hand: see `robustcheck schema`",
        )
    if names and len(names) == len(plans):
        for plan, name in zip(plans, names, strict=True):
            plan.name = name
    return plans


def _envelope_line(feature: str, stats: dict[str, Any], width: int) -> str:
    key = _key(feature).ljust(width)
    if stats["constant"]:
        return f"{key} = {{ frozen = true }}  # constant in the data"
    if stats["integer"]:
        return f"{key} = {{ integer = true }}  # integer-valued in the data: never moved"
    relative = f"relative = {PLACEHOLDER_RELATIVE:g}"
    if stats["min"] >= 0:
        return f"{key} = {{ {relative}, min = 0.0 }}  # TODO: this feature's uncertainty"
    return (
        f"{key} = {{ {relative} }}  # TODO: this feature's uncertainty "
        "(signed: `absolute = ...` may suit it better)"
    )


def render_spec(
    model_path: str,
    data_path: str,
    tree: str | None,
    labels: ArrayInfo,
    plans: list[InputPlan],
    model: ModelInfo,
    spec_name: str = "robustness.toml",
) -> str:
    """The starting spec as commented TOML."""
    classes = sorted({int(v) for v in np.unique(labels.values)})
    lines = [
        "# Starting robustness spec written by `robustcheck init`.",
        f"# Fill in every TODO, then: robustcheck validate {spec_name}; pytest --robustcheck",
        "version = 1",
        "",
        "[model]",
        f"path = {_string(model_path)}",
    ]
    if model.outputs:
        others = f" (outputs: {', '.join(model.outputs)})" if len(model.outputs) > 1 else ""
        lines.append(
            f"output = {_string(model.outputs[0])}  # the output holding the class scores{others}"
        )
    lines += [
        'scores = "logits"  # TODO: what the output holds: logits | probabilities | sigmoid'
        " | binary_logit",
        f"signal_class = {max(classes)}  # the class whose score is the discriminant; labels "
        f"in the data: {', '.join(map(str, classes))}",
    ]
    if model.note:
        lines.append(f"# note: {model.note}")
    lines += ["", "[data.nominal]", f"path = {_string(data_path)}"]
    if tree:
        lines.append(f"tree = {_string(tree)}")
    lines.append(f"labels = {_string(labels.name)}")
    sources = ", ".join(f"{_key(p.name)} = {json.dumps(p.source)}" for p in plans)
    lines.append(f"inputs = {{ {sources} }}  # model input name -> array(s) in the file")
    longest = max((p.jagged_longest for p in plans), default=0)
    if longest:
        lines.append(f"pad = {longest}  # TODO: entries kept per event (longest in the data)")
    lines.append("# max_events = 100000  # read at most this many events")
    lines += [
        "",
        "# [data.alternative]  # a sample from a second generator (e.g. Herwig), for resilience",
        '# path = "herwig.npz"  # with the same labels and inputs as [data.nominal]',
    ]
    for plan in plans:
        lines += ["", f"[inputs.{_key(plan.name)}]"]
        names = ", ".join(_string(f) for f in plan.features)
        todo = "  # TODO: name the features" if plan.features[0].endswith("_0") else ""
        lines.append(f"features = [{names}]{todo}")
        if plan.jagged_longest:
            lines.append('# mask = "..."  # the model input that marks real (non-padding) entries')
    for plan in plans:
        width = max(len(_key(f)) for f in plan.features)
        lines += [
            "",
            f"[envelope.{_key(plan.name)}]  # sigma of every feature: the experiment's uncertainty",
        ]
        lines += [
            _envelope_line(f, s, width) for f, s in zip(plan.features, plan.stats, strict=True)
        ]
    lines += [
        "",
        "[attacks.pgd_1sigma]",
        'method = "pgd"  # projected gradient descent in the sigma box',
        "epsilon = 1.0  # radius in units of each feature's sigma",
        "steps = 20",
        "seed = 1",
        "# scan = [0.5, 1, 2, 3]  # also measure at these epsilons (plotted in the report)",
        "",
        "[[checks]]",
        'name = "fooling rate within 1 sigma"',
        'type = "fooling_rate"',
        'attack = "pgd_1sigma"',
        "max = 0.05  # TODO: fails when the 95% CL upper limit on the fooling rate exceeds this",
        "",
        "[[checks]]",
        'name = "inputs look nominal after the attack"',
        'type = "invariance"',
        'attack = "pgd_1sigma"',
        "ks_min_pvalue = 0.01  # TODO: per-feature KS p-value below which the shift is visible",
        "max_correlation_change = 0.02  # TODO: largest allowed change of a correlation",
        "",
    ]
    return "\n".join(lines)


def write_starting_spec(
    model: str,
    data: str,
    output: str | Path = "robustness.toml",
    labels: str | None = None,
    tree: str | None = None,
    force: bool = False,
) -> Path:
    """Inspect the model and data, write the starting spec and check that it validates."""
    from robustcheck.spec import load_spec

    output = Path(output).resolve()
    if output.exists() and not force:
        raise SpecError(
            "the file exists already",
            file=output,
            fix="pass --force to overwrite it, or --output another path",
        )
    data_file = Path(data).resolve()
    if not data_file.is_file():
        raise DataError("data file not found", file=data_file, fix="check the path")
    model_info = inspect_model(model, Path.cwd())
    arrays, tree = inspect_data(data_file, tree)
    label_array = pick_labels(arrays, labels, data_file)
    plans = plan_inputs(arrays, label_array, model_info)
    folder = output.parent
    model_path = model if is_import_path(model) else _relative(Path(model).resolve(), folder)
    text = render_spec(
        model_path, _relative(data_file, folder), tree, label_array, plans, model_info, output.name
    )
    folder.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    load_spec(output)
    return output


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive
        return path.as_posix()
