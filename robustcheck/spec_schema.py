"""The spec (version 1) as a JSON Schema, for editors that validate robustness.toml/yaml.

Built from the same field tables that validate specs (robustcheck.spec, the attack and check
declarations), so it cannot drift from what ``load_spec`` accepts: each attack ``method`` and
check ``type`` gets its own options through an if/then branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustcheck import registry
from robustcheck import spec as spec_module
from robustcheck.declaration import Declaration
from robustcheck.schema import to_json_schema

SCHEMA_ID = "urn:pytest-robustcheck:spec:1"
_NAMES = {"type": "string", "minLength": 1}


def _by_discriminator(
    declarations: Mapping[str, Declaration], key: str, what: str
) -> dict[str, Any]:
    """An object whose ``key`` picks one declaration, and whose options are that one's."""
    branches = []
    for name, declaration in declarations.items():
        then = to_json_schema(declaration.options)
        if declaration.requires_one_of:
            then["anyOf"] = [{"required": [option]} for option in declaration.requires_one_of]
        if declaration.doc:
            then["description"] = declaration.doc
        branches.append(
            {"if": {"properties": {key: {"const": name}}, "required": [key]}, "then": then}
        )
    return {
        "type": "object",
        "description": f"the {what}; its `{key}` decides which other keys are allowed",
        "required": [key],
        "properties": {key: {"enum": list(declarations), "description": f"the {what} {key}"}},
        "allOf": branches,
    }


def _data_table() -> dict[str, Any]:
    table = to_json_schema(spec_module.DATA_FIELDS)
    inputs = dict(table["properties"]["inputs"])
    inputs["additionalProperties"] = {
        "oneOf": [_NAMES, {"type": "array", "items": _NAMES, "minItems": 1}]
    }
    inputs["minProperties"] = 1
    table["properties"]["inputs"] = inputs
    return table


def _envelope_table() -> dict[str, Any]:
    table: dict[str, Any] = {
        "type": "object",
        "description": "one entry per feature of the input: its uncertainty and bounds",
        "additionalProperties": to_json_schema(spec_module.FEATURE_FIELDS),
    }
    group_fields = getattr(spec_module, "GROUP_FIELDS", None)
    if group_fields is not None:
        table["properties"] = {
            "groups": {
                "type": "array",
                "description": "features moved together: coherent shifts, correlated envelopes",
                "items": to_json_schema(group_fields),
            }
        }
    return table


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 spec."""
    known: dict[str, Any] = {
        **to_json_schema(spec_module.TOP_FIELDS)["properties"],
        "model": to_json_schema(spec_module.MODEL_FIELDS),
        "data": {
            "type": "object",
            "description": "samples: [data.nominal] and optionally [data.alternative]",
            "required": ["nominal"],
            "additionalProperties": _data_table(),
        },
        "inputs": {
            "type": "object",
            "description": "per model input: feature names, mask, whether attacks move it",
            "additionalProperties": to_json_schema(spec_module.INPUT_FIELDS),
        },
        "envelope": {
            "type": "object",
            "description": "per perturbed model input: every feature's uncertainty",
            "additionalProperties": _envelope_table(),
        },
        "attacks": {
            "type": "object",
            "description": "named adversaries, computed once and shared by the checks",
            "additionalProperties": _by_discriminator(registry.attacks(), "method", "attack"),
        },
        "checks": {
            "type": "array",
            "minItems": 1,
            "description": "the assertions; each is one pytest item",
            "items": _by_discriminator(registry.checks(), "type", "check"),
        },
    }
    missing = set(spec_module.TOP_LEVEL) - set(known)
    if missing:  # a top-level key without a declaration would accept anything
        raise AssertionError(f"top-level keys without a JSON Schema: {sorted(missing)}")
    properties = {section: known[section] for section in spec_module.TOP_LEVEL}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"robustcheck spec (version {spec_module.SPEC_VERSION})",
        "type": "object",
        "required": ["model", "data", "checks"],
        "properties": properties,
        "additionalProperties": False,
    }
