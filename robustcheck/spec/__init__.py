"""The robustness spec (version 1): loading TOML/YAML, validation and the typed result.

Split along its seams: ``names`` (spec file names, the format version), ``fields`` (the
options of each table, declared once), ``types`` (the validated spec's dataclasses),
``documents`` (reading TOML/YAML), ``envelope`` (feature envelopes and groups), ``parsing``
(every other section, and the collection of all errors) and ``problems`` (the error helpers).
Every public name is re-exported here: ``from robustcheck.spec import X`` is the way in.

Nothing here imports torch, numpy or scipy: pytest collects specs with this package alone.
"""

from __future__ import annotations

from robustcheck.schema import SpecErrors as SpecErrors  # load_spec raises it
from robustcheck.spec.documents import read_document
from robustcheck.spec.envelope import GROUPS_KEY, coherent_group_names, feature_envelope
from robustcheck.spec.fields import (
    DATA_FIELDS,
    FEATURE_FIELDS,
    GROUP_FIELDS,
    INPUT_FIELDS,
    KEEP_EVENTS,
    MODEL_FIELDS,
    SKIPPABLE_GATES,
    TOP_FIELDS,
    TOP_LEVEL,
)
from robustcheck.spec.names import SPEC_NAME, SPEC_VERSION, is_spec_file
from robustcheck.spec.parsing import (
    check_spec,
    format_spec_errors,
    load_spec,
    parse_spec,
    spec_errors,
)
from robustcheck.spec.types import (
    AttackSpec,
    CheckSpec,
    DataSpec,
    EnvelopeGroup,
    FeatureEnvelope,
    InputSpec,
    MaskOf,
    ModelSpec,
    Spec,
    is_import_path,
)

__all__ = [
    "DATA_FIELDS",
    "FEATURE_FIELDS",
    "GROUPS_KEY",
    "GROUP_FIELDS",
    "INPUT_FIELDS",
    "KEEP_EVENTS",
    "MODEL_FIELDS",
    "SKIPPABLE_GATES",
    "SPEC_NAME",
    "SPEC_VERSION",
    "TOP_FIELDS",
    "TOP_LEVEL",
    "AttackSpec",
    "CheckSpec",
    "DataSpec",
    "EnvelopeGroup",
    "FeatureEnvelope",
    "InputSpec",
    "MaskOf",
    "ModelSpec",
    "Spec",
    "SpecErrors",
    "check_spec",
    "coherent_group_names",
    "feature_envelope",
    "format_spec_errors",
    "is_import_path",
    "is_spec_file",
    "load_spec",
    "parse_spec",
    "read_document",
    "spec_errors",
]
