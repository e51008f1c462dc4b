"""``robustcheck init MODEL DATA``: a starting spec written from what the files hold.

The data file's arrays give the labels, the model inputs and the number of features of each;
an ONNX (or TorchScript, torch.export) model gives its input names. The envelope is a relative
placeholder to fill in: every line that needs the user's knowledge says TODO.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field, replace
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


@dataclass
class LabelsPick:
    """The labels array, and why it was picked when it was guessed ("" when given)."""

    array: ArrayInfo
    guess: str = ""


def pick_labels(arrays: list[ArrayInfo], labels: str | None, path: Path) -> ArrayInfo:
    """The labels array: as given, else a 1-D array of a few integer classes."""
    return choose_labels(arrays, labels, path).array


def choose_labels(arrays: list[ArrayInfo], labels: str | None, path: Path) -> LabelsPick:
    """The labels array, as given, else guessed: a 1-D array of a few integer classes, one
    named like labels first."""
    by_name = {a.name: a for a in arrays}
    if labels is not None:
        if labels not in by_name:
            raise DataError(
                f"no numeric array `{labels}` in the file; it holds {', '.join(by_name) or 'none'}",
                file=path,
                fix="pass --labels with one of those names",
            )
        return LabelsPick(by_name[labels])
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
    chosen = (known or candidates)[0]
    classes = len(np.unique(chosen.values))
    why = "named like labels: a " if known else "no array is named like labels; the first "
    others = [a.name for a in candidates if a is not chosen]
    also = f" (other candidates: {', '.join(others)})" if others else ""
    return LabelsPick(
        chosen, f"{why}1-D array of {classes} integer classes{also}; check, or pass --labels"
    )


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
    """One model input of the starting spec, and what of it is guessed."""

    name: str
    source: str | list[str]
    features: list[str]
    stats: list[dict[str, Any]]
    jagged_longest: int = 0
    # how the model input was matched to the file's arrays, when that is a guess ("" when
    # the model names an input and the file holds an array of that name)
    guess: str = ""
    per_event_shape: tuple[int, ...] = ()
    mask: str | None = None  # the model input that marks this one's real entries (guessed)
    mask_guess: str = ""
    perturb: bool = True

    @property
    def stacked(self) -> bool:
        """Several arrays stacked along a new last axis, in the file's order."""
        return isinstance(self.source, list)

    @property
    def binary(self) -> bool:
        """Every value 0 or 1 (a padding mask, perhaps)."""
        return all(s["integer"] and s["min"] >= 0 and s["max"] <= 1 for s in self.stats)


def _describe(plan: InputPlan) -> str:
    if isinstance(plan.source, list):
        one, many = ("branch", "branches") if plan.jagged_longest else ("column", "columns")
        if len(plan.source) == 1:
            return f"the {one} `{plan.source[0]}`"
        return f"the {len(plan.source)} {many} {', '.join(plan.source)} stacked in file order"
    return f"array `{plan.source}`"


def plan_inputs(arrays: list[ArrayInfo], labels: ArrayInfo, model: ModelInfo) -> list[InputPlan]:
    """Map model inputs to arrays: by name, else the multi-feature arrays, else one input
    stacking every per-event column. Each plan says what of its mapping is a guess."""
    n_events = len(labels.values)
    usable = [a for a in arrays if a is not labels and len(a.values) == n_events]
    by_name = {a.name: a for a in usable}
    wide = [a for a in usable if a.values.ndim >= 2 and not a.jagged]
    columns = [a for a in usable if a.values.ndim == 1]
    jagged = [a for a in usable if a.jagged and a.values.ndim == 2]

    def whole(name: str, array: ArrayInfo) -> InputPlan:
        n = array.values.shape[-1]
        short = array.name.rsplit("/", 1)[-1]
        return InputPlan(
            name,
            array.name,
            [f"{short}_{i}" for i in range(n)],
            array.column_stats(),
            per_event_shape=array.per_event_shape,
        )

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
            per_event_shape=info.per_event_shape,
        )

    names = model.inputs
    if names and all(n in by_name and by_name[n].values.ndim >= 2 for n in names):
        plans = [whole(n, by_name[n]) for n in names]
        _guess_masks(plans)
        return plans
    plans = []
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
    free = list(names or [])
    jagged_plans = [p for p in plans if p.jagged_longest]
    mask_names = [n for n in free if "mask" in n.lower() and n not in by_name]
    if jagged_plans and len(mask_names) == 1:  # the model takes a padding mask we compute
        jagged_plans[0].mask = mask_names[0]
        free.remove(mask_names[0])
    if names and len(free) == len(plans):
        for plan, name in zip(plans, free, strict=True):
            plan.name = name
        for plan in plans:
            plan.guess = f"model input `{plan.name}` takes {_describe(plan)}" + (
                ", matched to the model's inputs by position" if len(free) > 1 else ""
            )
    elif names:
        for plan in plans:
            plan.guess = (
                f"model input `{plan.name}` takes {_describe(plan)}, but the model's inputs "
                f"are {', '.join(names)}: rename it to the model's own"
            )
    else:
        for plan in plans:
            plan.guess = (
                f"model input `{plan.name}` takes {_describe(plan)}; the model's input names "
                f"are not known ({model.note or 'the format does not record them'})"
            )
    for plan in jagged_plans:
        if plan.mask:
            plan.mask_guess = (
                f"the model input `{plan.mask}` is the padding mask of `{plan.name}`'s jagged "
                "branches (it is named like a mask and the file has no array of that name)"
            )
    _guess_masks(plans)
    return plans


def _guess_masks(plans: list[InputPlan]) -> None:
    """An input of 0/1 values shaped like another's entries (N, P) vs (N, P, F) is guessed
    to be that input's padding mask: not perturbed, and named as its ``mask``."""
    for plan in plans:
        if len(plan.per_event_shape) != 1 or not plan.binary or plan.jagged_longest:
            continue
        owners = [
            other
            for other in plans
            if other is not plan
            and len(other.per_event_shape) == 2
            and other.per_event_shape[0] == plan.per_event_shape[0]
            and other.mask is None
        ]
        if len(owners) == 1:
            owner = owners[0]
            owner.mask = plan.name
            owner.mask_guess = (
                f"`{plan.name}` (values 0 and 1, one per entry of `{owner.name}`) marks the "
                f"real entries of `{owner.name}`"
            )
            plan.perturb = False


@dataclass
class WiringCheck:
    """The model on the first events of the data, wired as the starting spec says, and the
    sanity gates that `robustcheck run` applies before any check (robustcheck.sanity)."""

    auc: float | None = None
    auc_error: float | None = None
    n_events: int = 0
    n_signal: int = 0
    accuracy: float = 0.0
    majority: float = 0.0
    # failed sanity gates: (gate, message, fix)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    problem: str = ""  # why the model could not be evaluated

    @property
    def reversed(self) -> bool:
        """The discriminant ranks background above signal, significantly."""
        from robustcheck.sanity import GATE_Z

        if self.auc is None or self.auc_error is None:
            return False
        return self.auc < 0.5 - GATE_Z * self.auc_error

    @property
    def at_chance(self) -> bool:
        """The AUC or the decision is not significantly better than chance (the `auc` or
        `accuracy` gate fails), and the discriminant is not simply reversed."""
        return not self.reversed and any(g in CHANCE_GATES for g, _, _ in self.failures)

    def other_failures(self) -> list[tuple[str, str, str]]:
        """Failed gates that say something else than chance (finite, scores, classes)."""
        return [f for f in self.failures if f[0] not in CHANCE_GATES]

    def figures(self) -> str:
        error = f" ± {self.auc_error:.3f}" if self.auc_error is not None else ""
        return (
            f"AUC {self.auc:.3f}{error} on {self.n_events:,} events ({self.n_signal:,} signal), "
            f"accuracy {self.accuracy:.3f} (majority class {self.majority:.3f})"
        )

    def verdict(self, wiring: str) -> str:
        """One sentence on what ``wiring`` gives, naming the figure that decides."""
        if self.reversed:
            return f"{wiring} ranks background above signal: {self.figures()}"
        if self.at_chance:
            failed = {g for g, _, _ in self.failures}
            why = " and ".join(reason for g, reason in CHANCE_GATES.items() if g in failed)
            return f"{wiring} gives a tagger at chance ({why}): {self.figures()}"
        return f"{wiring} gives {self.figures()}"


# the sanity gates that fail for a tagger at chance, and what their failure says
CHANCE_GATES = {
    "auc": "its AUC is not significantly above 0.5",
    "accuracy": "its decision is not significantly better than one that ignores the inputs",
}


def check_wiring(spec_path: Path) -> WiringCheck:
    """Evaluate the model on the first events of [data.nominal] as the spec wires it: the AUC
    of the signal-class probability against the labels, the accuracy of the argmax, and the
    sanity gates of ``robustcheck.sanity`` (the same that `robustcheck run` applies)."""
    import torch

    from robustcheck.data import load_dataset
    from robustcheck.engine import evaluate, to_tensors
    from robustcheck.errors import RobustcheckError
    from robustcheck.sanity import assess
    from robustcheck.spec import load_spec
    from robustcheck.taggers import load_tagger

    spec = load_spec(spec_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation, deprecations: the spec's TODOs say it
            data = replace(spec.data["nominal"], max_events=SAMPLE_EVENTS, chunk_size=None)
            dataset = load_dataset(data, spec.path)
            tagger = load_tagger(spec).to(torch.device("cpu"))
            inputs = to_tensors(dataset, spec.perturbed_inputs())
            log_probs = evaluate(tagger, inputs, 8192)
    except RobustcheckError as exc:
        return WiringCheck(problem=_one_line(f"{exc.kind}: {exc.message}"))
    except Exception as exc:  # a model fed the wrong shapes may fail in its own way
        return WiringCheck(problem=_one_line(f"{type(exc).__name__}: {exc}"))
    labels = np.asarray(dataset.labels).astype(np.int64)
    classes = log_probs.shape[1]
    signal = spec.model.signal_class
    if len(labels) == 0:
        return WiringCheck(problem="the data holds no events")
    if int(labels.max()) >= classes or signal >= classes:
        return WiringCheck(
            problem=f"the model gives {classes} classes, but the labels go up to "
            f"{int(labels.max())} (signal_class {signal})"
        )
    nominal = assess(spec.model, log_probs, torch.from_numpy(labels), None, None)
    return WiringCheck(
        auc=nominal.auc,
        auc_error=nominal.auc_error,
        n_events=len(labels),
        n_signal=int((labels == signal).sum()),
        accuracy=nominal.accuracy,
        majority=nominal.majority_rate,
        failures=list(nominal.failures),
    )


def _one_line(text: str, limit: int = 200) -> str:
    """The line of an error message that says what failed: the last ``SomeError: ...`` line
    of a traceback-like message (TorchScript's), else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    line = named[-1] if len(named) > 1 else lines[0] if lines else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _wiring_lines(check: WiringCheck, wiring: str) -> list[str]:
    """Comment lines for the spec saying what the model does with the guessed wiring."""
    if check.problem:
        return [
            f"# TODO: the model could not be evaluated with this wiring ({check.problem}); "
            "check the inputs, their features and their order"
        ]
    lines = [
        f"# TODO: with this wiring the sanity gate `{gate}` fails: {message}; {fix}"
        for gate, message, fix in check.other_failures()
    ]
    if check.reversed:
        return [*lines, f"# TODO: {check.verdict(wiring)}; check signal_class (and the labels)"]
    if check.at_chance:
        return [
            *lines,
            f"# TODO: {check.verdict(wiring)}; check the order of the inputs and of their features",
        ]
    return [*lines, f"# {check.verdict(wiring)}"]


def _wiring_name(plans: list[InputPlan]) -> str:
    return "the guessed feature order" if any(p.guess for p in plans) else "this wiring"


def _envelope_line(feature: str, stats: dict[str, Any], width: int) -> str:
    key = _key(feature).ljust(width)
    if stats["constant"]:
        return (
            f"{key} = {{ frozen = true }}  # TODO: guessed: constant in the first events, so "
            "frozen; check"
        )
    if stats["integer"]:
        return (
            f"{key} = {{ integer = true }}  # TODO: guessed: integer-valued in the first "
            "events, so never moved; check (`absolute = 1.0` lets attacks move it by whole "
            "units)"
        )
    relative = f"relative = {PLACEHOLDER_RELATIVE:g}"
    placeholder = (
        f"# TODO: guessed: a placeholder sigma ({PLACEHOLDER_RELATIVE:.0%} of the value); "
        "check: set this feature's uncertainty"
    )
    if stats["min"] >= 0:
        return f"{key} = {{ {relative}, min = 0.0 }}  {placeholder}"
    return f"{key} = {{ {relative} }}  {placeholder} (signed: `absolute = ...` may suit it better)"


def render_spec(
    model_path: str,
    data_path: str,
    tree: str | None,
    labels: ArrayInfo,
    plans: list[InputPlan],
    model: ModelInfo,
    spec_name: str = "robustness.toml",
    *,
    labels_guess: str = "",
    wiring: WiringCheck | None = None,
) -> str:
    """The starting spec as commented TOML; every guess carries a `# TODO: guessed` line.

    ``labels_guess`` says why the labels array was picked (when it was guessed); ``wiring``
    is what the model gives with this wiring, written into [data.nominal].
    """
    classes = sorted({int(v) for v in np.unique(labels.values)})
    lines = [
        "# Starting robustness spec written by `robustcheck init`.",
        f"# Fill in every TODO, then: robustcheck validate {spec_name}; pytest --robustcheck",
        "version = 1",
        "",
        "[model]",
        f"path = {_string(model_path)}",
    ]
    if len(model.outputs) > 1:
        lines.append(
            f"output = {_string(model.outputs[0])}  # TODO: guessed: the first output; check it "
            f"holds the class scores (outputs: {', '.join(model.outputs)})"
        )
    elif model.outputs:
        lines.append(f"output = {_string(model.outputs[0])}  # the output holding the scores")
    lines += [
        'scores = "logits"  # TODO: guessed; check what the output holds: logits | '
        "probabilities | sigmoid | binary_logit",
        f"signal_class = {max(classes)}  # TODO: guessed: the highest label (labels in the "
        f"data: {', '.join(map(str, classes))}); check it is the class whose score is the "
        "discriminant",
    ]
    if model.note:
        lines.append(f"# note: {model.note}")
    lines += ["", "[data.nominal]", f"path = {_string(data_path)}"]
    if tree:
        lines.append(f"tree = {_string(tree)}")
    label_todo = f"  # TODO: guessed: {labels_guess}" if labels_guess else ""
    lines.append(f"labels = {_string(labels.name)}{label_todo}")
    lines += [f"# TODO: guessed: {plan.guess}; check" for plan in plans if plan.guess]
    sources = ", ".join(f"{_key(p.name)} = {json.dumps(p.source)}" for p in plans)
    lines.append(f"inputs = {{ {sources} }}  # model input name -> array(s) in the file")
    jagged_masks = [p for p in plans if p.jagged_longest and p.mask]
    if jagged_masks:
        masks = ", ".join(f"{_key(p.mask or '')} = {_string(p.name)}" for p in jagged_masks)
        lines.append(f"masks = {{ {masks} }}  # mask input -> the jagged input it masks")
    elif any(p.jagged_longest for p in plans):
        name = next(p.name for p in plans if p.jagged_longest)
        lines.append(
            f'# masks = {{ mask = "{name}" }}  # if the model takes the padding mask of '
            f'`{name}` (then mask = "mask" in [inputs.{_key(name)}])'
        )
    if wiring is not None:
        lines += _wiring_lines(wiring, _wiring_name(plans))
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
        if not plan.perturb:
            lines.append(
                "perturb = false  # TODO: guessed: a padding mask, which no attack may change; "
                "check"
            )
            continue
        names = ", ".join(_string(f) for f in plan.features)
        if plan.stacked:
            todo = (
                "  # TODO: guessed order: the file's order; check the model takes its features "
                "in this order"
            )
        elif plan.features[0].endswith("_0"):
            todo = (
                "  # TODO: guessed: placeholder names in the array's column order; check: name "
                "the features"
            )
        else:
            todo = ""
        lines.append(f"features = [{names}]{todo}")
        if plan.mask:
            lines.append(f"mask = {_string(plan.mask)}  # TODO: guessed: {plan.mask_guess}; check")
        elif plan.jagged_longest:
            lines.append('# mask = "..."  # the model input that marks real (non-padding) entries')
    for plan in plans:
        if not plan.perturb:
            continue
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
        "ks_min_pvalue = 0.01  # TODO: false-alarm rate of the whole check (Holm-corrected)",
        "corr_min_pvalue = 0.01  # TODO: z test of each pair's correlation, same Holm family",
        "# by_class = true  # also within each true class (control regions)",
        "# control_region_events = 1e6  # TODO: fails when a shift shows with this many events",
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
    check: bool = True,
) -> Path:
    """Inspect the model and data, write the starting spec and check that it validates.

    With ``check``, the model is then evaluated on the first events as the spec wires it: the
    spec records the AUC, and a wiring that gives a tagger at chance (or a reversed one) is
    marked TODO and warned about on stderr.
    """
    from robustcheck.spec import load_spec

    output = Path(output).resolve()
    if output.suffix != ".toml":
        raise SpecError(
            "robustcheck init writes TOML",
            file=output,
            fix="name the output NAME.toml or NAME.robust.toml",
        )
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
    pick = choose_labels(arrays, labels, data_file)
    plans = plan_inputs(arrays, pick.array, model_info)
    folder = output.parent
    model_path = model if is_import_path(model) else _relative(Path(model).resolve(), folder)

    def render(wiring: WiringCheck | None) -> str:
        return render_spec(
            model_path,
            _relative(data_file, folder),
            tree,
            pick.array,
            plans,
            model_info,
            output.name,
            labels_guess=pick.guess,
            wiring=wiring,
        )

    folder.mkdir(parents=True, exist_ok=True)
    output.write_text(render(None), encoding="utf-8")
    load_spec(output)
    if check:
        wiring = check_wiring(output)
        output.write_text(render(wiring), encoding="utf-8")
        _report_wiring(wiring, _wiring_name(plans), output)
    return output


def _report_wiring(check: WiringCheck, wiring: str, output: Path) -> None:
    if check.problem:
        print(
            f"robustcheck init: warning: the model could not be evaluated as {output.name} "
            f"wires it: {check.problem}",
            file=sys.stderr,
        )
        return
    for gate, message, _ in check.other_failures():
        print(
            f"robustcheck init: warning: with the wiring of {output.name} the sanity gate "
            f"`{gate}` fails: {message}",
            file=sys.stderr,
        )
    if check.reversed or check.at_chance:
        what = "signal_class" if check.reversed else "the order of the inputs and features"
        print(
            f"robustcheck init: warning: {check.verdict(wiring)}; check {what} in {output.name}",
            file=sys.stderr,
        )
    else:
        print(f"robustcheck init: {check.verdict(wiring)}")


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive
        return path.as_posix()
