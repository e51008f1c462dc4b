"""A small declarative schema for spec tables: validation with clear errors, and JSON Schema.

Attacks, checks and loaders declare their options as ``dict[str, Field]``; the same
declarations validate spec files and export a JSON Schema for editors.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcheck.errors import SpecError


class SpecErrors(SpecError):
    """Several independent mistakes in one spec, reported together.

    It reads as its first error (``message``, ``field``, ``fix`` and the start of ``str()`` are
    the first error's), followed by the others, numbered; ``errors`` holds them all.
    """

    def __init__(self, errors: Iterable[SpecError]) -> None:
        self.errors: tuple[SpecError, ...] = tuple(flatten_errors(errors))
        if not self.errors:
            raise ValueError("SpecErrors needs at least one error")
        first = self.errors[0]
        super().__init__(first.message, file=first.file, field=first.field, fix=first.fix)

    def render(self) -> str:
        first, rest = self.errors[0], self.errors[1:]
        text = first.render()
        if rest:
            text += f"\nand {len(rest)} more error{'s' if len(rest) > 1 else ''} in the same spec:"
            text += "\n" + numbered_errors(rest, first.file, start=2)
        return text


def flatten_errors(errors: Iterable[SpecError]) -> list[SpecError]:
    """The errors with every SpecErrors replaced by the errors it holds."""
    out: list[SpecError] = []
    for error in errors:
        out.extend(error.errors if isinstance(error, SpecErrors) else [error])
    return out


def one_error(errors: Sequence[SpecError]) -> SpecError:
    """The error to raise for ``errors``: itself when there is one, else a SpecErrors."""
    found = flatten_errors(errors)
    return found[0] if len(found) == 1 else SpecErrors(found)


def numbered_errors(errors: Sequence[SpecError], file: str | None, start: int = 1) -> str:
    """The errors as an indented, numbered list; the file is left out where it is ``file``."""
    blocks = []
    for number, error in enumerate(errors, start):
        where = ": ".join(
            part for part in (None if error.file == file else error.file, error.field) if part
        )
        lines = (f"{where}: {error.message}" if where else error.message).split("\n")
        if error.fix:
            lines.append(f"fix: {error.fix}")
        prefix = f"  {number}. "
        blocks.append(
            "\n".join(
                prefix + line if i == 0 else " " * len(prefix) + line
                for i, line in enumerate(lines)
            )
        )
    return "\n".join(blocks)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_NAMES = {
    "str": "a string",
    "path": "a file path",
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "list": "a list",
    "table": "a table",
    "str_or_int": "a string or an integer",
    "number_list": "a list of numbers",
    "str_list": "a list of strings",
    "str_map": "a table of strings",
}


@dataclass(frozen=True)
class Field:
    """One option of a spec table."""

    type: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    table: Mapping[str, Field] | None = field(default=None, compare=False)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def is_number(value: Any) -> bool:
    """An int or a float, but not a bool (which Python counts as an int): the one rule."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def did_you_mean(word: str, valid: Iterable[str], cutoff: float = 0.5) -> str | None:
    """``did you mean `X`?`` for the valid name closest to ``word``; None when none is close."""
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=cutoff)
    return f"did you mean `{close[0]}`?" if close else None


def _is_type(value: Any, type_: str) -> bool:
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "path":
        return isinstance(value, str) and value != ""
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return is_number(value)
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "list":
        return isinstance(value, list)
    if type_ == "table":
        return isinstance(value, Mapping)
    if type_ == "str_or_int":
        return _is_type(value, "str") or _is_type(value, "int")
    if type_ == "number_list":
        return isinstance(value, list) and all(_is_type(v, "number") for v in value)
    if type_ == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if type_ == "str_map":
        return isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())
    raise ValueError(f"unknown schema type {type_!r}")


def unknown_key_error(key: str, valid: list[str], where: str, source: str | Path) -> SpecError:
    """An error for an unknown key, suggesting the closest valid one."""
    hint = did_you_mean(key, valid) or f"valid keys: {', '.join(sorted(valid))}"
    return SpecError(f"unknown key `{key}`", file=source, field=where or None, fix=hint)


def validate(
    data: Mapping[str, Any], schema: Mapping[str, Field], where: str, source: str | Path
) -> dict[str, Any]:
    """Check ``data`` against ``schema``; return a copy with defaults filled in.

    Every unknown key, missing key and bad value of the table is reported: one SpecError, or
    a SpecErrors holding them all. A required key that an unknown key's did-you-mean names
    (a misspelt key) is not reported missing as well.
    """
    if not isinstance(data, Mapping):
        raise SpecError("must be a table", file=source, field=where or None)
    errors: list[SpecError] = []
    suggested: set[str] = set()
    for key in data:
        if key not in schema:
            errors.append(unknown_key_error(key, list(schema), where, source))
            suggested.update(difflib.get_close_matches(key, list(schema), n=1, cutoff=0.5))
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if spec.required and name not in suggested:
                errors.append(
                    SpecError(
                        f"missing required key `{name}`",
                        file=source,
                        field=where or None,
                        fix=f"add `{name} = ...` ({spec.doc or _TYPE_NAMES[spec.type]})",
                    )
                )
            out[name] = spec.default
            continue
        try:
            out[name] = check_value(data[name], spec, path, source)
        except SpecError as exc:
            errors.append(exc)
    if errors:
        raise one_error(errors)
    return out


def check_value(value: Any, spec: Field, path: str, source: str | Path) -> Any:
    """Check one value's type, range and choices."""
    if not _is_type(value, spec.type):
        raise SpecError(
            f"must be {_TYPE_NAMES[spec.type]}, got {value!r}",
            file=source,
            field=path,
            fix=spec.doc or None,
        )
    numbers = value if spec.type == "number_list" else [value] if spec.type == "number" else []
    if any(not math.isfinite(v) for v in numbers):
        raise SpecError(
            f"must be a finite number, got {value!r}", file=source, field=path, fix=spec.doc or None
        )
    items = value if spec.type == "str_list" else [value]
    for item in items if spec.choices is not None else ():
        if item not in spec.choices:
            close = did_you_mean(str(item), [str(c) for c in spec.choices], cutoff=0.6)
            hint = f"{close} " if close else ""
            raise SpecError(
                f"{item!r} is not one of {', '.join(map(repr, spec.choices))}",
                file=source,
                field=path,
                fix=f"{hint}choose one of {', '.join(map(str, spec.choices))}",
            )
    if (
        spec.minimum is not None
        and _is_type(value, "number")
        and (value < spec.minimum or (spec.exclusive_minimum and value == spec.minimum))
    ):
        op = ">" if spec.exclusive_minimum else ">="
        raise SpecError(f"must be {op} {spec.minimum}, got {value}", file=source, field=path)
    if spec.maximum is not None and _is_type(value, "number") and value > spec.maximum:
        raise SpecError(f"must be <= {spec.maximum}, got {value}", file=source, field=path)
    if spec.table is not None:
        return validate(value, spec.table, path, source)
    return value


_JSON_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string", "minLength": 1},
    "int": {"type": "integer"},
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "table": {"type": "object"},
    "str_or_int": {"type": ["string", "integer"]},
    "number_list": {"type": "array", "items": {"type": "number"}},
    "str_list": {"type": "array", "items": {"type": "string"}},
    "str_map": {"type": "object", "additionalProperties": {"type": "string"}},
}


def to_json_schema(schema: Mapping[str, Field]) -> dict[str, Any]:
    """A JSON Schema object for a table of fields."""
    props: dict[str, Any] = {}
    for name, spec in schema.items():
        prop = dict(_JSON_TYPES[spec.type])
        if spec.doc:
            prop["description"] = spec.doc
        if spec.choices is not None and spec.type == "str_list":
            prop["items"] = {"type": "string", "enum": list(spec.choices)}
        elif spec.choices is not None:
            prop["enum"] = list(spec.choices)
        if spec.minimum is not None:
            key = "exclusiveMinimum" if spec.exclusive_minimum else "minimum"
            prop[key] = spec.minimum
        if spec.maximum is not None:
            prop["maximum"] = spec.maximum
        if spec.table is not None:
            prop = {**prop, **to_json_schema(spec.table)}
        if not spec.required and spec.default is not None:
            prop["default"] = spec.default
        props[name] = prop
    required = [n for n, s in schema.items() if s.required]
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out
