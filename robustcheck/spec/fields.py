"""The options of each spec table, declared once: they validate specs and make the JSON Schema."""

from __future__ import annotations

from robustcheck.schema import Field
from robustcheck.spec.names import SPEC_VERSION

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
    "compile": Field(
        "bool",
        False,
        doc="run a torch module built by an import path through torch.compile (needs a C++ "
        "compiler on CPU; off by default: see benchmarks/compile_speed.py)",
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
    "trim_padding": Field(
        "bool",
        False,
        doc="cut each batch to its longest jet (slots beyond are padding in every event), for "
        "models whose scores do not depend on the padding length; verified on the nominal "
        "sample",
    ),
}

FEATURE_FIELDS: dict[str, Field] = {
    "absolute": Field("number", None, doc="sigma in the feature's units", minimum=0.0),
    "relative": Field("number", None, doc="sigma as a fraction of |value|", minimum=0.0),
    "min": Field("number", None, doc="physical lower bound"),
    "max": Field("number", None, doc="physical upper bound"),
    "frozen": Field("bool", False, doc="never changed by any attack"),
    "integer": Field(
        "bool",
        False,
        doc="integer-valued: moves by whole units within +-floor(epsilon * sigma) when a sigma "
        "is given, else never",
    ),
    "choices": Field(
        "number_list",
        None,
        doc="categorical: the values an attack may swap among (epsilon >= 1); other values "
        "never move",
    ),
    "default": Field("number", None, doc="placeholder value (e.g. -999) left untouched"),
    "unit": Field(
        "str",
        None,
        doc='the feature\'s unit (e.g. "GeV"), shown on plot axes and in messages that quote '
        "its values",
    ),
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

# the top-level keys that are values, not sections
TOP_FIELDS: dict[str, Field] = {
    "version": Field("int", SPEC_VERSION, doc="spec format version", choices=(SPEC_VERSION,)),
    "baseline": Field(
        "path", None, doc="baseline file for no_regression checks, relative to the spec file"
    ),
    "observables": Field(
        "table",
        None,
        doc="per-event observables computed from the model inputs, tested by invariance checks "
        "like features",
        table={
            "function": Field(
                "str",
                doc='"file.py:function" next to the spec, or "package.module:function": a '
                "function of the inputs (dict of torch tensors, padding and mask included) "
                "returning a dict of per-event tensors",
            )
        },
    ),
}

TOP_LEVEL = (
    "version",
    "model",
    "data",
    "inputs",
    "envelope",
    "attacks",
    "checks",
    "baseline",
    "observables",
)
