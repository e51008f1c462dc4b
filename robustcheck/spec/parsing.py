"""Validating a spec document: top-level keys, [model], [data.*], [inputs.*], [attacks.*] and
[[checks]], each independent part checked even when another has an error."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustcheck import registry
from robustcheck.errors import SpecError
from robustcheck.schema import (
    check_value,
    did_you_mean,
    numbered_errors,
    one_error,
    unknown_key_error,
    validate,
)
from robustcheck.spec.documents import read_document
from robustcheck.spec.envelope import GROUP_FIX, coherent_group_names, parse_envelope
from robustcheck.spec.fields import (
    DATA_FIELDS,
    INPUT_FIELDS,
    MODEL_FIELDS,
    TOP_FIELDS,
    TOP_LEVEL,
)
from robustcheck.spec.names import SPEC_VERSION
from robustcheck.spec.problems import Errors, error
from robustcheck.spec.types import (
    AttackSpec,
    CheckSpec,
    DataSpec,
    EnvelopeGroup,
    InputSpec,
    MaskOf,
    ModelSpec,
    Spec,
    is_import_path,
)


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


def _parse(doc: Mapping[str, Any], path: Path) -> tuple[Spec | None, list[SpecError]]:
    """The spec, or None and every error; see ``spec_errors`` for what depends on what."""
    errors = Errors()
    doc = copy.deepcopy(dict(doc))
    errors.attempt(registry.adjust_spec, doc, path)
    if errors:
        return None, errors.found
    version = doc.get("version", SPEC_VERSION)
    if "version" in doc and not _valid(version, "version", path):  # read by the wrong rules
        wrong = error(
            path,
            f"unsupported spec version {version!r}",
            "version",
            f"this robustcheck reads version {SPEC_VERSION}",
        )
        return None, [wrong]
    for key in doc:
        if key not in TOP_LEVEL:
            errors.add(unknown_key_error(key, list(TOP_LEVEL), "", path))
    for section in ("model", "data", "checks"):
        if section not in doc:
            errors.add(error(path, f"missing section [{section}]", fix=_SECTION_FIX[section]))

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
            parsed_envelope = parse_envelope(
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
    _check_attack_references(attacks, declared_attacks, path, errors)
    _check_radius_options(attacks, checks, path, errors)
    baseline = doc.get("baseline")
    if "baseline" in doc:
        errors.attempt(check_value, baseline, TOP_FIELDS["baseline"], "baseline", path)
    observables = None
    if "observables" in doc:
        observables = errors.attempt(_parse_observables, doc["observables"], path)
    if errors:
        return None, errors.found
    assert model is not None and inputs is not None and envelope is not None
    assert groups is not None
    baseline_path = path.parent / baseline if baseline else None
    spec = Spec(
        path,
        version,
        model,
        data,
        inputs,
        envelope,
        attacks,
        checks,
        groups,
        baseline_path,
        observables=observables,
    )
    return spec, []


def _parse_observables(table: Any, path: Path) -> str:
    """The [observables] function: ``file.py:function`` or ``package.module:function``."""
    function = check_value(table, TOP_FIELDS["observables"], "observables", path)["function"]
    target, colon, attr = function.rpartition(":")
    module_path = target.endswith(".py")
    if not colon or not attr.isidentifier() or not (module_path or is_import_path(function)):
        raise error(
            path,
            f"function {function!r} names no function",
            "observables.function",
            'write "jetobs.py:observables" (a file next to the spec) or '
            '"package.module:observables"',
        )
    if module_path and not (path.parent / target).is_file():
        raise error(
            path,
            f"observables file {target!r} not found next to the spec",
            "observables.function",
            "put the file next to the spec, or name an importable module",
        )
    return function


def _valid(value: Any, key: str, path: Path) -> bool:
    """Whether a top-level value meets its declaration in TOP_FIELDS."""
    try:
        check_value(value, TOP_FIELDS[key], key, path)
    except SpecError:
        return False
    return True


def _parse_model(table: Any, path: Path) -> ModelSpec:
    model_values = _with_tuple(validate(table, MODEL_FIELDS, "model", path))
    model_values["skip_gates"] = tuple(dict.fromkeys(model_values["skip_gates"] or ()))
    model = ModelSpec(**model_values)
    if model.signal_class > 1 and model.scores in ("sigmoid", "binary_logit"):
        raise error(
            path,
            f"signal_class {model.signal_class} with a single binary output",
            "model.signal_class",
            "use signal_class = 1 (or 0)",
        )
    return model


def _check_model_files(table: Any, path: Path, errors: Errors) -> None:
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
        raise error(
            spec_path,
            f"file not found: {target}",
            field,
            "paths are relative to the spec file's folder",
        )


def _parse_data(section: Any, path: Path, errors: Errors) -> dict[str, DataSpec]:
    """Every [data.NAME] table that validates; the errors of the others are recorded."""
    if not isinstance(section, Mapping) or not section:
        errors.add(error(path, "must hold at least [data.nominal]", "data", _SECTION_FIX["data"]))
        return {}
    if "nominal" not in section:
        errors.add(error(path, "missing [data.nominal]", "data", _SECTION_FIX["data"]))
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
                error(
                    path,
                    f"inputs {sorted(data.inputs)} differ from [data.nominal]'s "
                    f"{sorted(nominal_inputs)}",
                    f"data.{name}.inputs",
                    "every sample must map the same model inputs",
                )
            )
    return out


def _data_table(name: str, table: Any, path: Path, errors: Errors) -> DataSpec | None:
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
            error(
                path,
                "needs at least one input",
                f"data.{name}.inputs",
                'inputs = { x = "x" } maps model input -> array',
            )
        )
    if values["chunk_size"] is None and "keep_events" in table:
        errors.add(
            error(
                path,
                "keep_events applies only to a sample streamed in chunks",
                f"data.{name}.keep_events",
                "set chunk_size too, or remove keep_events (every event is kept)",
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
                raise error(path, f"lists {dupes} more than once", where, fix)
            out[key] = tuple(value)
        else:
            raise error(
                path, f"must be a name or a non-empty list of names, got {value!r}", where, fix
            )
    for key, target in masks.items():
        where = f"data.{name}.masks.{key}"
        if key in out:
            raise error(
                path,
                f"`{key}` is both in inputs and in masks",
                where,
                "a model input comes either from the file or from a mask, not both",
            )
        if target not in inputs:
            raise error(
                path,
                f"`{target}` is not a model input of [data.{name}] inputs",
                where,
                f"the jagged model input to mask, one of: {', '.join(inputs)}",
            )
        out[key] = MaskOf(target)
    return out


def _parse_inputs(
    section: Any, nominal: DataSpec, path: Path, errors: Errors
) -> tuple[dict[str, InputSpec], set[str]] | None:
    """The [inputs.NAME] of every model input that validates, and the names of those that do
    not; None when the section itself is unusable."""
    if not isinstance(section, Mapping):
        errors.add(error(path, "must be a table", "inputs"))
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
        raise error(
            path,
            "a perturbed input needs its feature names",
            where,
            f'[{where}] features = ["...", ...] (or perturb = false)',
        )
    if values["mask"] is not None and (
        values["mask"] not in model_inputs or values["mask"] == name
    ):
        raise error(
            path,
            f"mask `{values['mask']}` is not another model input",
            f"{where}.mask",
            f"one of: {', '.join(model_inputs)}",
        )
    features = tuple(values["features"] or ())
    dupes = sorted({f for f in features if features.count(f) > 1})
    if dupes:
        raise error(path, f"duplicate feature names {dupes}", f"{where}.features")
    if values["trim_padding"] and values["mask"] is None:
        raise error(
            path,
            "trim_padding needs the input's padding mask",
            f"{where}.trim_padding",
            f'name the mask input: [{where}] mask = "..."',
        )
    return InputSpec(name, features, values["mask"], values["perturb"], values["trim_padding"])


def _check_shift_attacks(
    attacks: dict[str, AttackSpec],
    groups: dict[str, tuple[EnvelopeGroup, ...]],
    path: Path,
    errors: Errors,
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
        raise error(
            path,
            "method `shift` moves coherent groups, but no [envelope.*] table has one",
            f"attacks.{name}.method",
            f"add to an [envelope.NAME] table: {GROUP_FIX.split(' (one')[0]}",
        )
    for group in attack.options.get("groups") or ():
        if group not in coherent:
            hint = did_you_mean(group, coherent) or f"one of: {', '.join(coherent)}"
            raise error(path, f"no coherent group named `{group}`", f"attacks.{name}.groups", hint)


def _check_attack_references(
    attacks: dict[str, AttackSpec], declared: set[str], path: Path, errors: Errors
) -> None:
    """An attack built from other tables (an ensemble) names valid ones: its declaration's
    ``check_spec``."""
    for name, attack in attacks.items():
        check = registry.attacks()[attack.method].check_spec
        if check is not None:
            errors.attempt(check, name, attack, attacks, declared, path, registry.attacks())


def _check_radius_options(
    attacks: dict[str, AttackSpec], checks: tuple[CheckSpec, ...], path: Path, errors: Errors
) -> None:
    """The checks that read a min_epsilon attack's radii (robust_radius, fooling_rate with
    epsilon) name one, and read it within its max_epsilon."""
    for check in checks:
        where = f"checks[{check.index}]"
        if check.type == "robust_radius":
            key, value = "min", check.options.get("min")
        elif check.type == "fooling_rate" and check.options.get("epsilon") is not None:
            key, value = "epsilon", check.options["epsilon"]
        else:
            continue
        attack = attacks.get(check.options.get("attack"))
        if attack is None:  # undefined or broken: reported already
            continue
        if attack.method != "min_epsilon":
            errors.add(
                error(
                    path,
                    f"`{key}` reads the radii of a min_epsilon attack, but attack "
                    f"{attack.name!r} is {attack.method}",
                    f"{where}.{'attack' if key == 'min' else key}",
                    'name an attack with method = "min_epsilon"'
                    + ("" if key == "min" else ", or remove epsilon to use the attack's own"),
                )
            )
        elif float(value) > float(attack.options["max_epsilon"]):
            errors.add(
                error(
                    path,
                    f"{key} = {value:g} is beyond the max_epsilon "
                    f"{attack.options['max_epsilon']:g} of attack {attack.name!r}, where radii "
                    "are censored",
                    f"{where}.{key}",
                    f"raise attacks.{attack.name}.max_epsilon to at least {value:g}",
                )
            )


def _parse_attacks(section: Any, path: Path, errors: Errors) -> dict[str, AttackSpec]:
    """Every attack that validates; the errors of the others are recorded."""
    if not isinstance(section, Mapping):
        errors.add(error(path, "must be a table of named attacks", "attacks"))
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
        raise error(
            path, "needs a `method`", where, f"method = one of {', '.join(registry.attacks())}"
        )
    method = table["method"]
    return AttackSpec(name, method, registry.attack_options(method, table, where, path))


def _parse_checks(
    section: Any,
    attacks: dict[str, AttackSpec],
    declared_attacks: set[str],
    data_names: set[str],
    path: Path,
    errors: Errors,
) -> tuple[CheckSpec, ...]:
    """Every check that validates; the errors of the others are recorded.

    ``declared_attacks`` and ``data_names`` are the names the spec gives, valid or not: a
    check that uses a broken attack or sample is not reported for it a second time.
    """
    if not isinstance(section, list) or not section:
        errors.add(
            error(
                path,
                "must be a non-empty list of [[checks]] tables",
                "checks",
                _SECTION_FIX["checks"],
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
        raise error(path, "needs a `type`", where, f"type = one of {', '.join(registry.checks())}")
    type_ = table["type"]
    if type_ not in registry.checks():
        raise unknown_key_error(str(type_), list(registry.checks()), f"{where}.type", path)
    options = validate(table, registry.checks()[type_].options, where, path)
    name = options.pop("name") or f"{type_}[{index}]"
    options.pop("type")
    if name in names:
        raise error(
            path,
            f"duplicate check name {name!r}",
            f"{where}.name",
            "give each check a distinct name",
        )
    names.add(name)
    attack = options.get("attack")
    if attack is not None and attack not in attacks and attack not in declared_attacks:
        known = sorted(declared_attacks)
        if not known:
            raise error(
                path,
                f"attack {attack!r} is not defined",
                f"{where}.attack",
                f'add [attacks.{attack}] with method = "pgd", epsilon = 1.0',
            )
        raise unknown_key_error(attack, known, f"{where}.attack", path)
    declared = registry.checks()[type_].requires_one_of
    if declared and all(options.get(key) is None for key in declared):
        raise error(
            path,
            "sets no threshold, so it could never fail",
            where,
            f"set at least one of: {', '.join(declared)}",
        )
    own_rule = registry.checks()[type_].validate
    problem = own_rule(options) if own_rule is not None else None
    if problem is not None:
        option, message, fix = problem
        raise error(path, message, f"{where}.{option}", fix)
    if registry.checks()[type_].needs_alternative and "alternative" not in data_names:
        raise error(
            path,
            f"check type {type_!r} compares two samples but there is no [data.alternative]",
            where,
            'add [data.alternative] path = "...", like nominal',
        )
    return CheckSpec(index, name, type_, options)
