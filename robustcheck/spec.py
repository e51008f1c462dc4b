"""The robustness spec (version 1): loading TOML/YAML, validation and the typed result.

Nothing here imports torch, numpy or scipy: pytest collects specs with this module alone.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from robustcheck import registry
from robustcheck.errors import SpecError
from robustcheck.schema import (
    Field,
    flatten_errors,
    numbered_errors,
    one_error,
    unknown_key_error,
    validate,
)
from robustcheck.schema import SpecErrors as SpecErrors  # re-exported: load_spec raises it

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_VERSION = 1
SPEC_NAME = re.compile(r"^(robustness|.+\.robust)\.(toml|ya?ml)$")

# sanity gates a spec may switch off with [model] skip_gates; finite outputs are never skipped
SKIPPABLE_GATES = ("scores", "classes", "auc", "accuracy")

MODEL_FIELDS: dict[str, Field] = {
    "path": Field("str", doc='model file (.onnx, TorchScript .pt/.ts, .pt2) or "pkg.mod:factory"'),
    "weights": Field("str", None, doc="state_dict file for a factory that returns an nn.Module"),
    "output": Field("str_or_int", 0, doc="index or name of the output that holds the scores"),
    "scores": Field(
        "str",
        "logits",
        doc="what the output holds",
        choices=("logits", "probabilities", "sigmoid", "binary_logit"),
    ),
    "signal_class": Field("int", 1, doc="class whose score is the discriminant", minimum=0),
    "device": Field("str", "auto", doc="auto | cpu | cuda | cuda:N"),
    "input_names": Field(
        "str_list", None, doc="model input names in call order, when they cannot be read"
    ),
    "min_auc": Field(
        "number",
        None,
        doc="sanity gate: the nominal AUC must reach this (it must always be significantly "
        "above 0.5)",
        minimum=0.0,
        maximum=1.0,
    ),
    "min_accuracy": Field(
        "number",
        None,
        doc="sanity gate: the nominal accuracy of the decision must reach this (its balanced "
        "accuracy must always beat a decision that ignores the inputs)",
        minimum=0.0,
        maximum=1.0,
    ),
    "skip_gates": Field(
        "str_list",
        None,
        doc="sanity gates not to apply (every verdict names the gates skipped; finite model "
        "outputs are always required)",
        choices=SKIPPABLE_GATES,
    ),
}

# events a streamed sample keeps in memory for statistics that need the inputs themselves
KEEP_EVENTS = 50_000

DATA_FIELDS: dict[str, Field] = {
    "path": Field("str", doc="data file (.npz, .npy, .h5/.hdf5, .parquet, .root)"),
    "labels": Field("str", doc="array holding the integer class labels"),
    "inputs": Field(
        "table",
        doc="model input name -> array/column/branch name, or a list of names stacked "
        "along a new last axis",
    ),
    "weights": Field("str", None, doc="array of per-event weights (AUC, ROC, efficiencies)"),
    "max_events": Field("int", None, doc="read at most this many events", minimum=1),
    "tree": Field("str", None, doc="tree name in a ROOT file"),
    "chunk_size": Field(
        "int",
        None,
        doc="stream the file in chunks of this many events (for data larger than memory)",
        minimum=1,
    ),
    "keep_events": Field(
        "int",
        KEEP_EVENTS,
        doc="with chunk_size: events kept in memory (a seeded random sample) for the "
        "distribution checks, hypothesis searches and plots",
        minimum=1,
    ),
    "pad": Field("int", None, doc="length to which jagged branches are padded", minimum=1),
    "truncate": Field(
        "str",
        "warn",
        doc="when an event has more than `pad` entries: keep the first `pad` and warn, or raise",
        choices=("warn", "error"),
    ),
    "masks": Field(
        "str_map", None, doc="model input name -> jagged model input whose padding mask it is"
    ),
    "strict_bounds": Field(
        "bool",
        False,
        doc="values outside the envelope's min/max are an error (default: a warning with the "
        "count)",
    ),
}

INPUT_FIELDS: dict[str, Field] = {
    "features": Field("str_list", None, doc="names along the last axis"),
    "mask": Field("str", None, doc="model input that marks real (non-padding) entries"),
    "perturb": Field("bool", True, doc="false for inputs no attack may change"),
}

FEATURE_FIELDS: dict[str, Field] = {
    "absolute": Field("number", None, doc="sigma in the feature's units", minimum=0.0),
    "relative": Field("number", None, doc="sigma as a fraction of |value|", minimum=0.0),
    "min": Field("number", None, doc="physical lower bound"),
    "max": Field("number", None, doc="physical upper bound"),
    "frozen": Field("bool", False, doc="never changed by any attack"),
    "integer": Field("bool", False, doc="integer-valued: never changed by continuous attacks"),
    "default": Field("number", None, doc="placeholder value (e.g. -999) left untouched"),
}

GROUP_FIELDS: dict[str, Field] = {
    "features": Field("str_list", doc="features of this input the group moves together"),
    "name": Field(
        "str",
        None,
        doc="group name; coherent groups of one name share their shift, across inputs",
    ),
    "coherent": Field(
        "bool",
        False,
        doc="one shared shift s per event: x -> x * (1 + relative * s) + absolute * s",
    ),
    "relative": Field(
        "number", None, doc="coherent: scale sigma (x -> x * (1 + relative * s))", minimum=0.0
    ),
    "absolute": Field(
        "number", None, doc="coherent: additive sigma (x -> x + absolute * s)", minimum=0.0
    ),
    "covariance": Field("list", None, doc="covariance matrix in the features' units"),
    "correlation": Field("list", None, doc="correlation matrix over the features' absolute sigmas"),
}

TOP_LEVEL = ("version", "model", "data", "inputs", "envelope", "attacks", "checks", "baseline")


@dataclass(frozen=True)
class ModelSpec:
    path: str
    weights: str | None
    output: str | int
    scores: str
    signal_class: int
    device: str
    input_names: tuple[str, ...] | None
    min_auc: float | None = None
    min_accuracy: float | None = None
    skip_gates: tuple[str, ...] = ()


@dataclass(frozen=True)
class MaskOf:
    """A model input computed as the padding mask (1.0 real, 0.0 padding) of a jagged input."""

    input: str


@dataclass(frozen=True)
class DataSpec:
    """One [data.NAME] table.

    ``inputs`` holds every model input, mask inputs included: a string names one array, a
    tuple names arrays stacked along a new last axis, a ``MaskOf`` is the padding mask of
    another (jagged) model input.
    """

    name: str
    path: Path
    labels: str
    inputs: dict[str, str | tuple[str, ...] | MaskOf]
    max_events: int | None
    tree: str | None
    pad: int | None = None
    truncate: str = "warn"
    weights: str | None = None
    chunk_size: int | None = None
    keep_events: int = KEEP_EVENTS
    strict_bounds: bool = False

    @property
    def masks(self) -> dict[str, str]:
        """Mask model input -> the jagged model input it masks."""
        return {k: v.input for k, v in self.inputs.items() if isinstance(v, MaskOf)}

    def keys(self) -> list[str]:
        """The arrays to read from the file (labels first), each once."""
        keys = [self.labels] + ([self.weights] if self.weights else [])
        for source in self.inputs.values():
            if isinstance(source, str):
                keys.append(source)
            elif isinstance(source, tuple):
                keys.extend(source)
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class InputSpec:
    name: str
    features: tuple[str, ...]
    mask: str | None
    perturb: bool


@dataclass(frozen=True)
class FeatureEnvelope:
    absolute: float | None
    relative: float | None
    min: float | None
    max: float | None
    frozen: bool
    integer: bool
    default: float | None

    @property
    def movable(self) -> bool:
        return not (self.frozen or self.integer)


@dataclass(frozen=True)
class EnvelopeGroup:
    """One entry of ``[envelope.NAME] groups``: a coherent shift or a correlated envelope.

    A coherent group moves its features of every constituent by one shared variable ``s`` per
    event: ``x -> x * (1 + relative * s) + absolute * s``. A correlated group replaces the box
    of its features by the Mahalanobis ball of ``covariance`` (always in the features' units;
    a ``correlation`` is turned into one with the features' absolute sigmas).
    """

    input: str
    name: str
    features: tuple[str, ...]
    coherent: bool
    relative: float | None = None
    absolute: float | None = None
    covariance: tuple[tuple[float, ...], ...] | None = None

    @property
    def correlated(self) -> bool:
        return self.covariance is not None


@dataclass(frozen=True)
class AttackSpec:
    name: str
    method: str
    options: dict[str, Any]

    @property
    def epsilon(self) -> float:
        return float(self.options["epsilon"])


@dataclass(frozen=True)
class CheckSpec:
    index: int
    name: str
    type: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Spec:
    """A validated robustness spec; relative paths are already resolved."""

    path: Path
    version: int
    model: ModelSpec
    data: dict[str, DataSpec]
    inputs: dict[str, InputSpec]
    envelope: dict[str, dict[str, FeatureEnvelope]]
    attacks: dict[str, AttackSpec]
    checks: tuple[CheckSpec, ...]
    groups: dict[str, tuple[EnvelopeGroup, ...]] = field(default_factory=dict)
    baseline: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def model_path(self) -> Path | None:
        """The model file, or None when the model is an import path."""
        return None if is_import_path(self.model.path) else self.base_dir / self.model.path

    def perturbed_inputs(self) -> list[str]:
        return [name for name, spec in self.inputs.items() if spec.perturb]


def is_import_path(path: str) -> bool:
    """True for ``pkg.module:factory`` model paths (dotted identifiers on both sides)."""
    module, colon, attr = path.partition(":")
    return bool(colon) and all(
        part.isidentifier() for part in [*module.split("."), *attr.split(".")]
    )


def is_spec_file(path: Path) -> bool:
    """Whether pytest --robustcheck collects this file."""
    return bool(SPEC_NAME.match(path.name))


def read_document(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict, with parse errors as SpecError.

    A key given twice in one table is an error in both formats (tomllib rejects it; the YAML
    loader here does too, where ``yaml.safe_load`` would silently keep the last value).
    """
    if not path.is_file():
        raise SpecError("spec file not found", file=path, fix="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            doc = tomllib.loads(text)
        else:
            import yaml

            doc = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise SpecError(
            f"duplicate key `{exc.key}`: given on line {exc.first} and again on line {exc.second}",
            file=path,
            field=exc.field,
            fix="keep one of the two (a YAML reader would silently use the last one)",
        ) from None
    except Exception as exc:  # parser errors carry their own line numbers
        message = str(exc)
        twice = "Cannot overwrite a value" in message or "Cannot declare" in message
        raise SpecError(
            f"cannot parse: {message}",
            file=path,
            fix="a key or table is given twice: keep one" if twice else None,
        ) from None
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a table of sections", file=path)
    return doc


class _DuplicateKey(Exception):
    """A YAML mapping gives one key twice (raised by the loader, turned into a SpecError)."""

    def __init__(self, key: object, field: str, first: int, second: int) -> None:
        super().__init__(f"duplicate key {key!r} at {field}")
        self.key = key
        self.field = field
        self.first = first
        self.second = second


@functools.cache
def _unique_key_loader() -> type:
    """A yaml.SafeLoader whose mappings refuse a key given twice (built when YAML is read)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        _root: yaml.Node | None = None

        def construct_document(self, node: yaml.Node) -> Any:
            self._root = node
            return super().construct_document(node)

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *anchor` entries may be overridden: that is their use
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # the base constructor reports unhashable keys
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        where = _yaml_node_path(self._root, node)
                        field = f"{where}.{key}" if where else str(key)
                        raise _DuplicateKey(key, field, seen[key], line)
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _yaml_node_path(root: Any, target: Any) -> str:
    """The key path (``model``, ``checks[1]``) from the document root to a YAML node."""
    import yaml

    stack: list[tuple[Any, str]] = [(root, "")]
    visited: set[int] = set()
    while stack:
        node, where = stack.pop()
        if node is target:
            return where
        if id(node) in visited:  # aliases may make the node graph cyclic
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((value, f"{where}.{name}" if where else str(name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
    return ""


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file.

    Raises a SpecError with file, field and fix; when the spec holds several independent
    mistakes, a SpecErrors (a SpecError that reads as the first, then lists the others).
    """
    spec, errors = check_spec(path)
    if errors:
        raise one_error(errors)
    assert spec is not None
    return spec


def check_spec(path: str | Path) -> tuple[Spec | None, list[SpecError]]:
    """Read and validate a spec file: the spec, or None and every error found in it."""
    path = Path(path).resolve()
    try:
        doc = read_document(path)
    except SpecError as exc:
        return None, [exc]
    return _parse(doc, path)


def spec_errors(path: str | Path) -> list[SpecError]:
    """Every error of a spec file, in file order ([] for a valid spec).

    Independent parts (top-level keys, [model], each [data.NAME], [inputs], each envelope
    input, each attack, each check) are validated even when another part has an error; a part
    that depends on a broken one is skipped rather than reported as broken too.
    """
    return check_spec(path)[1]


def format_spec_errors(errors: list[SpecError], name: str | Path) -> str:
    """``3 errors in NAME:`` and the numbered errors, for `robustcheck validate`."""
    count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
    file = errors[0].file if errors else None
    return f"{count} in {name}:\n" + numbered_errors(errors, file)


def parse_spec(doc: Mapping[str, Any], path: Path) -> Spec:
    """Validate a parsed spec document; ``path`` anchors relative paths and messages.

    Plugins may first adjust a copy of the document (hook ``robustcheck_adjust_spec``).
    Raises like ``load_spec``.
    """
    spec, errors = _parse(doc, path)
    if errors:
        raise one_error(errors)
    assert spec is not None
    return spec


_T = TypeVar("_T")


class _Errors:
    """The errors of a spec's independent parts, collected instead of raised at the first."""

    def __init__(self) -> None:
        self.found: list[SpecError] = []

    def __len__(self) -> int:
        return len(self.found)

    def add(self, error: SpecError) -> None:
        self.found.extend(flatten_errors([error]))

    def attempt(self, run: Callable[..., _T], *args: Any) -> _T | None:
        """``run(*args)``; on a SpecError, None with the error recorded."""
        try:
            return run(*args)
        except SpecError as exc:
            self.add(exc)
            return None


def _parse(doc: Mapping[str, Any], path: Path) -> tuple[Spec | None, list[SpecError]]:
    """The spec, or None and every error; see ``spec_errors`` for what depends on what."""
    errors = _Errors()
    doc = copy.deepcopy(dict(doc))
    errors.attempt(registry.adjust_spec, doc, path)
    if errors:
        return None, errors.found
    version = doc.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:  # the rest would be read by the wrong rules
        error = SpecError(
            f"unsupported spec version {version!r}",
            file=path,
            field="version",
            fix=f"this robustcheck reads version {SPEC_VERSION}",
        )
        return None, [error]
    for key in doc:
        if key not in TOP_LEVEL:
            errors.add(unknown_key_error(key, list(TOP_LEVEL), "", path))
    for section in ("model", "data", "checks"):
        if section not in doc:
            errors.add(
                SpecError(f"missing section [{section}]", file=path, fix=_SECTION_FIX[section])
            )

    model = None
    if "model" in doc:
        model = errors.attempt(_parse_model, doc["model"], path)
        _check_model_files(doc["model"], path, errors)

    data = _parse_data(doc["data"], path, errors) if "data" in doc else {}
    nominal = data.get("nominal")
    inputs = envelope = groups = None
    if nominal is not None:  # inputs and envelope are keyed by the nominal sample's inputs
        parsed_inputs = _parse_inputs(doc.get("inputs", {}), nominal, path, errors)
        if parsed_inputs is not None:
            inputs, unparsed = parsed_inputs
            before = len(errors)
            parsed_envelope = _parse_envelope(
                doc.get("envelope", {}), inputs, unparsed, path, errors
            )
            if parsed_envelope is not None and len(errors) == before and not unparsed:
                envelope, groups = parsed_envelope

    raw_attacks = doc.get("attacks", {})
    attacks = _parse_attacks(raw_attacks, path, errors)
    declared_attacks = set(raw_attacks) if isinstance(raw_attacks, Mapping) else set()
    checks: tuple[CheckSpec, ...] = ()
    if "checks" in doc:
        raw_data = doc.get("data")
        data_names = set(raw_data) if isinstance(raw_data, Mapping) else set()
        checks = _parse_checks(doc["checks"], attacks, declared_attacks, data_names, path, errors)
    if groups is not None:  # shift attacks name coherent groups of a whole envelope
        _check_shift_attacks(attacks, groups, path, errors)
    baseline = doc.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        errors.add(SpecError(f"must be a file path, got {baseline!r}", file=path, field="baseline"))
    if errors:
        return None, errors.found
    assert model is not None and inputs is not None and envelope is not None
    assert groups is not None
    baseline_path = path.parent / baseline if baseline else None
    spec = Spec(
        path, version, model, data, inputs, envelope, attacks, checks, groups, baseline_path
    )
    return spec, []


def _parse_model(table: Any, path: Path) -> ModelSpec:
    model_values = _with_tuple(validate(table, MODEL_FIELDS, "model", path))
    model_values["skip_gates"] = tuple(dict.fromkeys(model_values["skip_gates"] or ()))
    model = ModelSpec(**model_values)
    if model.signal_class > 1 and model.scores in ("sigmoid", "binary_logit"):
        raise SpecError(
            f"signal_class {model.signal_class} with a single binary output",
            file=path,
            field="model.signal_class",
            fix="use signal_class = 1 (or 0)",
        )
    return model


def _check_model_files(table: Any, path: Path, errors: _Errors) -> None:
    """The model and weights files exist (checked even when another model key is wrong)."""
    if not isinstance(table, Mapping):
        return
    if isinstance(table.get("path"), str):
        errors.attempt(_check_file, path, "model.path", table["path"], True)
    if isinstance(table.get("weights"), str):
        errors.attempt(_check_file, path, "model.weights", table["weights"])


_SECTION_FIX = {
    "model": '[model] path = "tagger.onnx"',
    "data": '[data.nominal] path = "test.npz", labels = "y", inputs = { x = "x" }',
    "checks": '[[checks]] type = "fooling_rate", attack = "...", max = 0.05',
}


def _with_tuple(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _check_file(spec_path: Path, field: str, value: str, allow_import: bool = False) -> None:
    if allow_import and is_import_path(value):
        return
    target = spec_path.parent / value
    if not target.exists():
        raise SpecError(
            f"file not found: {target}",
            file=spec_path,
            field=field,
            fix="paths are relative to the spec file's folder",
        )


def _parse_data(section: Any, path: Path, errors: _Errors) -> dict[str, DataSpec]:
    """Every [data.NAME] table that validates; the errors of the others are recorded."""
    if not isinstance(section, Mapping) or not section:
        errors.add(
            SpecError(
                "must hold at least [data.nominal]",
                file=path,
                field="data",
                fix=_SECTION_FIX["data"],
            )
        )
        return {}
    if "nominal" not in section:
        errors.add(
            SpecError("missing [data.nominal]", file=path, field="data", fix=_SECTION_FIX["data"])
        )
    out = {}
    for name, table in section.items():
        found = _data_table(name, table, path, errors)
        if found is not None:
            out[name] = found
    nominal = out.get("nominal")
    if nominal is None:
        return out
    nominal_inputs = set(nominal.inputs)
    for name, data in out.items():
        if set(data.inputs) != nominal_inputs:
            errors.add(
                SpecError(
                    f"inputs {sorted(data.inputs)} differ from [data.nominal]'s "
                    f"{sorted(nominal_inputs)}",
                    file=path,
                    field=f"data.{name}.inputs",
                    fix="every sample must map the same model inputs",
                )
            )
    return out


def _data_table(name: str, table: Any, path: Path, errors: _Errors) -> DataSpec | None:
    """One [data.NAME] table, or None with its errors recorded (a missing file is recorded
    but still gives the table: nothing else depends on the file being there)."""
    values = errors.attempt(validate, table, DATA_FIELDS, f"data.{name}", path)
    if isinstance(table, Mapping) and isinstance(table.get("path"), str):
        errors.attempt(_check_file, path, f"data.{name}.path", table["path"])
    if values is None:
        return None
    before = len(errors)
    if not values["inputs"]:
        errors.add(
            SpecError(
                "needs at least one input",
                file=path,
                field=f"data.{name}.inputs",
                fix='inputs = { x = "x" } maps model input -> array',
            )
        )
    if values["chunk_size"] is None and "keep_events" in table:
        errors.add(
            SpecError(
                "keep_events applies only to a sample streamed in chunks",
                file=path,
                field=f"data.{name}.keep_events",
                fix="set chunk_size too, or remove keep_events (every event is kept)",
            )
        )
    inputs = errors.attempt(
        _data_inputs, values.pop("inputs"), values.pop("masks") or {}, name, path
    )
    if inputs is None or len(errors) > before:
        return None
    return DataSpec(name=name, **{**values, "inputs": inputs, "path": path.parent / values["path"]})


def _data_inputs(
    inputs: Mapping[str, Any], masks: Mapping[str, str], name: str, path: Path
) -> dict[str, str | tuple[str, ...] | MaskOf]:
    """Check [data.NAME] inputs (a name or a list of names each) and masks; merge them."""
    out: dict[str, str | tuple[str, ...] | MaskOf] = {}
    for key, value in inputs.items():
        where = f"data.{name}.inputs.{key}"
        fix = f'{key} = "array" or {key} = ["a", "b"] (stacked along a new last axis)'
        if isinstance(value, str) and value:
            out[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            dupes = sorted({v for v in value if value.count(v) > 1})
            if dupes:
                raise SpecError(f"lists {dupes} more than once", file=path, field=where, fix=fix)
            out[key] = tuple(value)
        else:
            raise SpecError(
                f"must be a name or a non-empty list of names, got {value!r}",
                file=path,
                field=where,
                fix=fix,
            )
    for key, target in masks.items():
        where = f"data.{name}.masks.{key}"
        if key in out:
            raise SpecError(
                f"`{key}` is both in inputs and in masks",
                file=path,
                field=where,
                fix="a model input comes either from the file or from a mask, not both",
            )
        if target not in inputs:
            raise SpecError(
                f"`{target}` is not a model input of [data.{name}] inputs",
                file=path,
                field=where,
                fix=f"the jagged model input to mask, one of: {', '.join(inputs)}",
            )
        out[key] = MaskOf(target)
    return out


def _parse_inputs(
    section: Any, nominal: DataSpec, path: Path, errors: _Errors
) -> tuple[dict[str, InputSpec], set[str]] | None:
    """The [inputs.NAME] of every model input that validates, and the names of those that do
    not; None when the section itself is unusable."""
    if not isinstance(section, Mapping):
        errors.add(SpecError("must be a table", file=path, field="inputs"))
        return None
    model_inputs = list(nominal.inputs)
    for name in section:
        if name not in model_inputs:
            errors.add(unknown_key_error(name, model_inputs, "inputs", path))
    masks = {table.get("mask") for table in section.values() if isinstance(table, Mapping)} - {None}
    out: dict[str, InputSpec] = {}
    unparsed: set[str] = set()
    for name in model_inputs:
        found = errors.attempt(_input_spec, section, name, model_inputs, masks, path)
        if found is None:
            unparsed.add(name)
        else:
            out[name] = found
    return out, unparsed


def _input_spec(
    section: Mapping[str, Any], name: str, model_inputs: list[str], masks: set[Any], path: Path
) -> InputSpec:
    where = f"inputs.{name}"
    values = validate(section.get(name, {}), INPUT_FIELDS, where, path)
    if name in masks and name not in section:
        values["perturb"] = False
    if values["perturb"] and values["features"] is None:
        raise SpecError(
            "a perturbed input needs its feature names",
            file=path,
            field=where,
            fix=f'[{where}] features = ["...", ...] (or perturb = false)',
        )
    if values["mask"] is not None and (
        values["mask"] not in model_inputs or values["mask"] == name
    ):
        raise SpecError(
            f"mask `{values['mask']}` is not another model input",
            file=path,
            field=f"{where}.mask",
            fix=f"one of: {', '.join(model_inputs)}",
        )
    features = tuple(values["features"] or ())
    dupes = sorted({f for f in features if features.count(f) > 1})
    if dupes:
        raise SpecError(f"duplicate feature names {dupes}", file=path, field=f"{where}.features")
    return InputSpec(name, features, values["mask"], values["perturb"])


GROUPS_KEY = "groups"


def feature_envelope(table: Any, where: str, source: str | Path) -> FeatureEnvelope:
    """One feature's envelope entry, validated (sigma presence is the caller's to check)."""
    entry = FeatureEnvelope(**validate(table, FEATURE_FIELDS, where, source))
    if entry.min is not None and entry.max is not None and entry.min > entry.max:
        raise SpecError(f"min {entry.min} > max {entry.max}", file=source, field=where)
    return entry


def _parse_envelope(
    section: Any, inputs: dict[str, InputSpec], unparsed: set[str], path: Path, errors: _Errors
) -> tuple[dict[str, dict[str, FeatureEnvelope]], dict[str, tuple[EnvelopeGroup, ...]]] | None:
    """Per-feature envelopes of every perturbed input, and their ``groups``.

    Each input's envelope is checked on its own (an input whose [inputs] table is broken is
    skipped: its features are not known); None when the section itself is unusable.
    """
    if not isinstance(section, Mapping):
        errors.add(SpecError("must be a table", file=path, field="envelope"))
        return None
    perturbed = [name for name, spec in inputs.items() if spec.perturb]
    for name in section:
        if name not in perturbed and name not in unparsed:
            errors.add(unknown_key_error(name, perturbed, "envelope", path))
    out: dict[str, dict[str, FeatureEnvelope]] = {}
    groups: dict[str, tuple[EnvelopeGroup, ...]] = {}
    for name in perturbed:
        found = _input_envelope(section.get(name, {}), name, inputs[name].features, path, errors)
        if found is not None:
            out[name], groups[name] = found
    errors.attempt(_check_group_names, groups, path)
    return out, {name: found for name, found in groups.items() if found}


def _input_envelope(
    table: Any, name: str, features: tuple[str, ...], path: Path, errors: _Errors
) -> tuple[dict[str, FeatureEnvelope], tuple[EnvelopeGroup, ...]] | None:
    """One [envelope.NAME] table: every feature's entry and the groups; None on an error."""
    if not isinstance(table, Mapping):
        errors.add(SpecError("must be a table of features", file=path, field=f"envelope.{name}"))
        return None
    if GROUPS_KEY in features:
        errors.add(
            SpecError(
                f"the feature name `{GROUPS_KEY}` is reserved: [envelope.{name}] {GROUPS_KEY} "
                "lists the feature groups",
                file=path,
                field=f"inputs.{name}.features",
                fix="rename that feature",
            )
        )
        return None
    before = len(errors)
    raw_groups = []
    # features of a group that does not validate may take their sigma from its covariance:
    # whether they lack a sigma (or give one twice) is not known
    unknown_sigma: set[str] = set()
    for index, entry in enumerate(
        errors.attempt(_group_list, table.get(GROUPS_KEY), name, path) or []
    ):
        raw = errors.attempt(
            _group_table, entry, f"envelope.{name}.{GROUPS_KEY}[{index}]", features, path
        )
        if raw is not None:
            raw_groups.append(raw)
        elif isinstance(entry, Mapping) and isinstance(entry.get("features"), list):
            unknown_sigma.update(f for f in entry["features"] if isinstance(f, str))
    from_covariance = {
        feature
        for group in raw_groups
        if group["covariance"] is not None
        for feature in group["features"]
    }
    for feature in table:
        if feature != GROUPS_KEY and feature not in features:
            errors.add(
                unknown_key_error(feature, [*features, GROUPS_KEY], f"envelope.{name}", path)
            )
    missing = [f for f in features if f not in table]
    if missing:
        errors.add(
            SpecError(
                f"no envelope for {len(missing)} feature(s): {', '.join(missing)}",
                file=path,
                field=f"envelope.{name}",
                fix="give each an `absolute` or `relative` sigma, or `frozen = true`",
            )
        )
    entries: dict[str, FeatureEnvelope] = {}
    for feature in features:
        if feature in table:
            sigma_from = None if feature in unknown_sigma else feature in from_covariance
            entry = errors.attempt(
                _feature_entry, table[feature], f"envelope.{name}.{feature}", sigma_from, path
            )
            if entry is not None:
                entries[feature] = entry
    if len(errors) > before:
        return None
    found = []
    for index, raw in enumerate(raw_groups):
        group = errors.attempt(_finish_group, raw, index, name, entries, path)
        if group is not None:
            found.append(group)
    if len(errors) > before:
        return None
    groups = tuple(found)
    errors.attempt(_check_overlaps, groups, name, path)
    return entries, groups


def _feature_entry(
    table: Any, where: str, from_covariance: bool | None, path: Path
) -> FeatureEnvelope:
    """One feature's entry with its sigma: its own, or (``from_covariance``) its group's;
    ``from_covariance`` None: not known (its group is broken), so not checked."""
    entry = feature_envelope(table, where, path)
    has_sigma = entry.absolute is not None or entry.relative is not None
    if from_covariance and has_sigma:
        raise SpecError(
            "sigma given twice: the feature is in a group with a `covariance`",
            file=path,
            field=where,
            fix="drop `absolute`/`relative` here: the covariance's diagonal is its variance",
        )
    if from_covariance is False and entry.movable and not has_sigma:
        raise SpecError(
            "no uncertainty given",
            file=path,
            field=where,
            fix="set `absolute = ...` or `relative = ...` (or `frozen = true`)",
        )
    return entry


_GROUP_FIX = (
    'groups = [{ features = ["pt"], coherent = true, relative = 0.02 }] (one shared shift per '
    'event), or [{ features = ["eta", "phi"], covariance = [[...], [...]] }] (correlated)'
)


def _group_list(value: Any, name: str, path: Path) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(
            f"must be a list of group tables, got {value!r}",
            file=path,
            field=f"envelope.{name}.{GROUPS_KEY}",
            fix=_GROUP_FIX,
        )
    return value


def _group_table(entry: Any, where: str, features: tuple[str, ...], path: Path) -> dict[str, Any]:
    """Validate one group's keys, features and matrix (matrices not yet in feature units)."""
    values = validate(entry, GROUP_FIELDS, where, path)
    names = values["features"]
    if not names:
        raise SpecError("lists no features", file=path, field=f"{where}.features", fix=_GROUP_FIX)
    for feature in names:
        if feature not in features:
            close = difflib.get_close_matches(feature, list(features), n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`?" if close else f"one of: {', '.join(features)}"
            raise SpecError(
                f"unknown feature `{feature}`", file=path, field=f"{where}.features", fix=hint
            )
    dupes = sorted({f for f in names if names.count(f) > 1})
    if dupes:
        raise SpecError(f"lists {dupes} more than once", file=path, field=f"{where}.features")
    values["features"] = tuple(names)
    values["where"] = where
    matrices = [key for key in ("covariance", "correlation") if values[key] is not None]
    sigmas = [key for key in ("relative", "absolute") if values[key] is not None]
    if values["coherent"]:
        if matrices:
            raise SpecError(
                f"a coherent group moves by one shared shift and takes no `{matrices[0]}`",
                file=path,
                field=f"{where}.{matrices[0]}",
                fix="drop `coherent = true` for a correlated envelope, or the matrix for a "
                "coherent shift",
            )
        if not sigmas:
            raise SpecError(
                "coherent group without sigma",
                file=path,
                field=where,
                fix="set `relative = ...` (a scale, e.g. a jet energy scale) or "
                "`absolute = ...` (an additive shift)",
            )
        return values
    if sigmas:
        raise SpecError(
            f"`{sigmas[0]}` sets the shared shift of a coherent group, but this group is not "
            "coherent",
            file=path,
            field=f"{where}.{sigmas[0]}",
            fix="add `coherent = true`, or give a `covariance`/`correlation` for a correlated "
            "envelope",
        )
    if not matrices:
        raise SpecError(
            "group without sigma: neither coherent nor correlated",
            file=path,
            field=where,
            fix="set `coherent = true` with `relative`/`absolute`, or a `covariance` or "
            "`correlation` matrix",
        )
    if len(matrices) == 2:
        raise SpecError(
            "gives both `covariance` and `correlation`",
            file=path,
            field=where,
            fix="keep one: a covariance in the features' units, or a correlation over their "
            "absolute sigmas",
        )
    kind = matrices[0]
    values[kind] = _matrix(values[kind], len(names), f"{where}.{kind}", kind, path)
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matrix(
    value: list[Any], size: int, where: str, kind: str, path: Path
) -> tuple[tuple[float, ...], ...]:
    """A symmetric positive definite size x size matrix, or a SpecError saying what is wrong."""
    fix = f"{kind} = [[...], ...]: {size} rows of {size} numbers, in the order of `features`"
    if not (
        len(value) == size
        and all(
            isinstance(row, list) and len(row) == size and all(_is_number(v) for v in row)
            for row in value
        )
    ):
        raise SpecError(
            f"must be a {size}x{size} matrix (one row per feature of the group), got {value!r}",
            file=path,
            field=where,
            fix=fix,
        )
    matrix = tuple(tuple(float(v) for v in row) for row in value)
    if not all(math.isfinite(v) for row in matrix for v in row):
        raise SpecError("holds a NaN or infinite entry", file=path, field=where, fix=fix)
    if kind == "correlation":
        for i in range(size):
            if not math.isclose(matrix[i][i], 1.0, rel_tol=1e-9):
                raise SpecError(
                    f"diagonal entry [{i}][{i}] is {matrix[i][i]:g}, not 1",
                    file=path,
                    field=where,
                    fix="a correlation matrix has ones on its diagonal (use `covariance` for "
                    "variances)",
                )
            for j in range(size):
                if abs(matrix[i][j]) > 1.0:
                    raise SpecError(
                        f"entry [{i}][{j}] = {matrix[i][j]:g} is outside [-1, 1]",
                        file=path,
                        field=where,
                        fix="correlation coefficients lie between -1 and 1",
                    )
    scale = max(abs(matrix[i][i]) for i in range(size)) or 1.0
    for i in range(size):
        for j in range(i + 1, size):
            if abs(matrix[i][j] - matrix[j][i]) > 1e-9 * scale:
                raise SpecError(
                    f"is not symmetric: [{i}][{j}] = {matrix[i][j]:g} but "
                    f"[{j}][{i}] = {matrix[j][i]:g}",
                    file=path,
                    field=where,
                    fix=f"a {kind} matrix equals its transpose",
                )
    if not _positive_definite(matrix):
        raise SpecError(
            "is not positive definite",
            file=path,
            field=where,
            fix="every variance must be > 0 and the correlations mutually consistent (no "
            "zero or negative eigenvalue); for fully correlated features use a coherent group",
        )
    return matrix


def _positive_definite(matrix: tuple[tuple[float, ...], ...]) -> bool:
    """Cholesky factorisation in pure Python (the spec module imports no numpy)."""
    size = len(matrix)
    lower = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1):
            rest = matrix[i][j] - sum(lower[i][k] * lower[j][k] for k in range(j))
            if i == j:
                if rest <= 1e-12 * abs(matrix[i][i]) or rest <= 0.0:
                    return False
                lower[i][i] = math.sqrt(rest)
            else:
                lower[i][j] = rest / lower[j][j]
    return True


def _finish_group(
    raw: dict[str, Any],
    index: int,
    name: str,
    entries: dict[str, FeatureEnvelope],
    path: Path,
) -> EnvelopeGroup:
    """The group with its covariance in feature units; fills sigmas from a covariance."""
    where = raw["where"]
    features = raw["features"]
    for feature in features:
        entry = entries[feature]
        if not entry.movable:
            kind = "frozen" if entry.frozen else "integer"
            raise SpecError(
                f"feature `{feature}` is {kind}, so no group may move it",
                file=path,
                field=f"{where}.features",
                fix=f"drop `{feature}` from the group, or its `{kind} = true`",
            )
    covariance = raw["covariance"]
    if raw["correlation"] is not None:
        sigmas = []
        for feature in features:
            entry = entries[feature]
            if entry.relative is not None or entry.absolute is None:
                raise SpecError(
                    f"a correlation is over the features' absolute sigmas, but `{feature}` "
                    + ("has a relative sigma" if entry.relative is not None else "has none"),
                    file=path,
                    field=f"envelope.{name}.{feature}",
                    fix=f"give `{feature}` `absolute = ...` only, or use `covariance = ...` in "
                    "the features' units",
                )
            sigmas.append(entry.absolute)
        covariance = tuple(
            tuple(r * si * sj for r, sj in zip(row, sigmas, strict=True))
            for row, si in zip(raw["correlation"], sigmas, strict=True)
        )
    elif covariance is not None:
        for i, feature in enumerate(features):
            entries[feature] = replace(entries[feature], absolute=math.sqrt(covariance[i][i]))
    return EnvelopeGroup(
        input=name,
        name=raw["name"] or f"{name}.{GROUPS_KEY}[{index}]",
        features=features,
        coherent=raw["coherent"],
        relative=raw["relative"],
        absolute=raw["absolute"],
        covariance=covariance,
    )


def _check_overlaps(groups: tuple[EnvelopeGroup, ...], name: str, path: Path) -> None:
    """No feature in two coherent or in two correlated groups; group names unique per input."""
    for kind, members in (
        ("coherent", [g for g in groups if g.coherent]),
        ("correlated", [g for g in groups if g.correlated]),
    ):
        owner: dict[str, str] = {}
        for group in members:
            for feature in group.features:
                if feature in owner:
                    raise SpecError(
                        f"feature `{feature}` is in two {kind} groups (`{owner[feature]}` and "
                        f"`{group.name}`)",
                        file=path,
                        field=f"envelope.{name}.{GROUPS_KEY}",
                        fix=f"put `{feature}` in one {kind} group only (merge the two groups)",
                    )
                owner[feature] = group.name
    seen: set[str] = set()
    for group in groups:
        if group.name in seen:
            raise SpecError(
                f"two groups are named `{group.name}`",
                file=path,
                field=f"envelope.{name}.{GROUPS_KEY}",
                fix="give each group of an input its own name (merge their features instead)",
            )
        seen.add(group.name)


def _check_group_names(groups: dict[str, tuple[EnvelopeGroup, ...]], path: Path) -> None:
    """Groups of one name across inputs share a shift, so they must all be coherent."""
    by_name: dict[str, list[EnvelopeGroup]] = {}
    for found in groups.values():
        for group in found:
            by_name.setdefault(group.name, []).append(group)
    for group_name, members in by_name.items():
        if len(members) > 1 and not all(g.coherent for g in members):
            inputs = ", ".join(f"[envelope.{g.input}]" for g in members)
            raise SpecError(
                f"group name `{group_name}` is used in {inputs}, but only coherent groups "
                "share a shift across inputs",
                file=path,
                field=f"envelope.{members[-1].input}.{GROUPS_KEY}",
                fix="rename the correlated group",
            )


def coherent_group_names(groups: Mapping[str, tuple[EnvelopeGroup, ...]]) -> list[str]:
    """Names of the coherent groups, in spec order, each once (shared names count once)."""
    names = [g.name for found in groups.values() for g in found if g.coherent]
    return list(dict.fromkeys(names))


def _check_shift_attacks(
    attacks: dict[str, AttackSpec],
    groups: dict[str, tuple[EnvelopeGroup, ...]],
    path: Path,
    errors: _Errors,
) -> None:
    """A `shift` attack needs coherent groups, and names only groups that exist."""
    for name, attack in attacks.items():
        if attack.method == "shift":
            errors.attempt(_check_shift_attack, name, attack, groups, path)


def _check_shift_attack(
    name: str, attack: AttackSpec, groups: dict[str, tuple[EnvelopeGroup, ...]], path: Path
) -> None:
    coherent = coherent_group_names(groups)
    if not coherent:
        raise SpecError(
            "method `shift` moves coherent groups, but no [envelope.*] table has one",
            file=path,
            field=f"attacks.{name}.method",
            fix=f"add to an [envelope.NAME] table: {_GROUP_FIX.split(' (one')[0]}",
        )
    for group in attack.options.get("groups") or ():
        if group not in coherent:
            close = difflib.get_close_matches(group, coherent, n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`?" if close else f"one of: {', '.join(coherent)}"
            raise SpecError(
                f"no coherent group named `{group}`",
                file=path,
                field=f"attacks.{name}.groups",
                fix=hint,
            )


def _parse_attacks(section: Any, path: Path, errors: _Errors) -> dict[str, AttackSpec]:
    """Every attack that validates; the errors of the others are recorded."""
    if not isinstance(section, Mapping):
        errors.add(SpecError("must be a table of named attacks", file=path, field="attacks"))
        return {}
    out = {}
    for name, table in section.items():
        attack = errors.attempt(_attack_spec, name, table, path)
        if attack is not None:
            out[name] = attack
    return out


def _attack_spec(name: str, table: Any, path: Path) -> AttackSpec:
    where = f"attacks.{name}"
    if not isinstance(table, Mapping) or "method" not in table:
        raise SpecError(
            "needs a `method`",
            file=path,
            field=where,
            fix=f"method = one of {', '.join(registry.attacks())}",
        )
    method = table["method"]
    if method not in registry.attacks():
        raise unknown_key_error(str(method), list(registry.attacks()), f"{where}.method", path)
    options = validate(table, registry.attacks()[method].options, where, path)
    options.pop("method")
    return AttackSpec(name, method, options)


def _parse_checks(
    section: Any,
    attacks: dict[str, AttackSpec],
    declared_attacks: set[str],
    data_names: set[str],
    path: Path,
    errors: _Errors,
) -> tuple[CheckSpec, ...]:
    """Every check that validates; the errors of the others are recorded.

    ``declared_attacks`` and ``data_names`` are the names the spec gives, valid or not: a
    check that uses a broken attack or sample is not reported for it a second time.
    """
    if not isinstance(section, list) or not section:
        errors.add(
            SpecError(
                "must be a non-empty list of [[checks]] tables",
                file=path,
                field="checks",
                fix=_SECTION_FIX["checks"],
            )
        )
        return ()
    out = []
    names: set[str] = set()
    for index, table in enumerate(section):
        check = errors.attempt(
            _check_spec, index, table, attacks, declared_attacks, data_names, names, path
        )
        if check is not None:
            out.append(check)
    return tuple(out)


def _check_spec(
    index: int,
    table: Any,
    attacks: dict[str, AttackSpec],
    declared_attacks: set[str],
    data_names: set[str],
    names: set[str],
    path: Path,
) -> CheckSpec:
    """One [[checks]] table; adds its name to ``names``."""
    where = f"checks[{index}]"
    if not isinstance(table, Mapping) or "type" not in table:
        raise SpecError(
            "needs a `type`",
            file=path,
            field=where,
            fix=f"type = one of {', '.join(registry.checks())}",
        )
    type_ = table["type"]
    if type_ not in registry.checks():
        raise unknown_key_error(str(type_), list(registry.checks()), f"{where}.type", path)
    options = validate(table, registry.checks()[type_].options, where, path)
    name = options.pop("name") or f"{type_}[{index}]"
    options.pop("type")
    if name in names:
        raise SpecError(
            f"duplicate check name {name!r}",
            file=path,
            field=f"{where}.name",
            fix="give each check a distinct name",
        )
    names.add(name)
    attack = options.get("attack")
    if attack is not None and attack not in attacks and attack not in declared_attacks:
        known = sorted(declared_attacks)
        if not known:
            raise SpecError(
                f"attack {attack!r} is not defined",
                file=path,
                field=f"{where}.attack",
                fix=f'add [attacks.{attack}] with method = "pgd", epsilon = 1.0',
            )
        raise unknown_key_error(attack, known, f"{where}.attack", path)
    declared = registry.checks()[type_].requires_one_of
    if declared and all(options.get(key) is None for key in declared):
        raise SpecError(
            "sets no threshold, so it could never fail",
            file=path,
            field=where,
            fix=f"set at least one of: {', '.join(declared)}",
        )
    if registry.checks()[type_].needs_alternative and "alternative" not in data_names:
        raise SpecError(
            f"check type {type_!r} compares two samples but there is no [data.alternative]",
            file=path,
            field=where,
            fix='add [data.alternative] path = "...", like nominal',
        )
    return CheckSpec(index, name, type_, options)
