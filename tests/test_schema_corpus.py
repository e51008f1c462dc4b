"""The parser and the JSON Schema of `robustcheck schema` agree on a corpus of good and bad
specs: both accept the good ones, both refuse the bad ones whose rule a JSON Schema can
express. Rules across fields or files (a missing data file, an undefined attack name, an
envelope that misses a feature) are marked ``cross_field``: only the parser refuses those,
and the JSON Schema is checked to accept them, so that each mark stays true."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from robustcheck.cli import main
from robustcheck.errors import SpecError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec

Doc = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[Doc], object]
    valid: bool
    cross_field: bool = False  # a rule that the JSON Schema cannot express
    error: str = ""  # a fragment of the parser's message, for the invalid cases


def put(path: str, value: Any) -> Callable[[Doc], None]:
    """Set ``a.b.c`` (list indices as numbers) in the document."""

    def change(doc: Doc) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def drop(path: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = doc
        for part in parents:
            target = target[part]
        del target[last]

    return change


def both(*changes: Callable[[Doc], object]) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        for one in changes:
            one(doc)

    return change


ALTERNATIVE = {"path": "alt.npz", "labels": "y", "inputs": {"x": "x"}}
RESILIENCE = {"type": "resilience", "max_auc_change_percent": 2.0}
GROUP = {"features": ["jet_pt", "jet_mass"], "coherent": True, "relative": 0.02, "name": "jes"}

CASES = [
    # --- good specs ----------------------------------------------------------------------
    Case("base", lambda doc: None, True),
    Case("baseline path", put("baseline", "ref/baseline.json"), True),
    Case("no version", drop("version"), True),
    Case("feature unit", put("envelope.x.jet_pt.unit", "GeV"), True),
    Case(
        "alternative sample and resilience",
        both(put("data.alternative", ALTERNATIVE), lambda d: d["checks"].append(RESILIENCE)),
        True,
    ),
    Case(
        "model options",
        both(
            put("model.scores", "probabilities"),
            put("model.device", "cpu"),
            put("model.skip_gates", ["auc"]),
            put("model.min_auc", 0.6),
            put("model.output", "scores"),
        ),
        True,
    ),
    Case("streamed sample", both(put("data.nominal.chunk_size", 500)), True),
    Case("stacked input", put("data.nominal.inputs.x", ["x"]), True),
    Case(
        "coherent group and shift attack",
        both(
            put("envelope.x.groups", [GROUP]),
            put("attacks.jes", {"method": "shift", "epsilon": 1.0}),
        ),
        True,
    ),
    Case(
        "invariance check",
        lambda d: d["checks"].append(
            {"type": "invariance", "attack": "pgd", "ks_min_pvalue": 0.01}
        ),
        True,
    ),
    # --- top level -----------------------------------------------------------------------
    Case("baseline = 5", put("baseline", 5), False, error="must be a file path, got 5"),
    Case("baseline empty", put("baseline", ""), False, error="must be a file path"),
    Case("version 2", put("version", 2), False, error="unsupported spec version 2"),
    Case("version true", put("version", True), False, error="unsupported spec version True"),
    Case("version string", put("version", "1"), False, error="unsupported spec version '1'"),
    Case("unknown top-level key", put("modle", {}), False, error="unknown key `modle`"),
    Case("no [model]", drop("model"), False, error="missing section [model]"),
    Case("no [data]", drop("data"), False, error="missing section [data]"),
    Case("no checks", drop("checks"), False, error="missing section [checks]"),
    Case("empty checks", put("checks", []), False, error="non-empty list"),
    # --- [model] -------------------------------------------------------------------------
    Case("model path not a string", put("model.path", 5), False, error="must be a string"),
    Case("model scores choice", put("model.scores", "logit"), False, error="did you mean"),
    Case("signal_class < 0", put("model.signal_class", -1), False, error="must be >= 0"),
    Case("min_auc > 1", put("model.min_auc", 1.5), False, error="must be <= 1.0"),
    Case("min_auc a bool", put("model.min_auc", True), False, error="must be a number"),
    Case("model unknown key", put("model.weigths", "w.pt"), False, error="`weights`"),
    Case("skip_gates choice", put("model.skip_gates", ["finite"]), False, error="not one of"),
    Case("model without path", drop("model.path"), False, error="missing required key `path`"),
    # --- [data.*] ------------------------------------------------------------------------
    Case("data without nominal", put("data", {"other": ALTERNATIVE}), False, error="nominal"),
    Case("data without labels", drop("data.nominal.labels"), False, error="`labels`"),
    Case("max_events = 0", put("data.nominal.max_events", 0), False, error="must be >= 1"),
    Case("truncate choice", put("data.nominal.truncate", "drop"), False, error="not one of"),
    Case("no inputs", put("data.nominal.inputs", {}), False, error="at least one input"),
    Case("input a number", put("data.nominal.inputs.x", 3), False, error="must be a name"),
    Case("input an empty list", put("data.nominal.inputs.x", []), False, error="must be a name"),
    Case("input an empty name", put("data.nominal.inputs.x", ""), False, error="must be a name"),
    Case(
        "strict_bounds a string",
        put("data.nominal.strict_bounds", "yes"),
        False,
        error="true or false",
    ),
    Case("data unknown key", put("data.nominal.max_event", 10), False, error="`max_events`"),
    # --- [inputs.*] ----------------------------------------------------------------------
    Case("perturb a number", put("inputs.x.perturb", 1), False, error="true or false"),
    Case("features a string", put("inputs.x.features", "jet_pt"), False, error="a list of str"),
    Case("inputs unknown key", put("inputs.x.feature", ["a"]), False, error="unknown key"),
    # --- [envelope.*] --------------------------------------------------------------------
    Case("negative sigma", put("envelope.x.jet_pt.relative", -0.1), False, error=">= 0.0"),
    Case("envelope unknown key", put("envelope.x.jet_pt.sigma", 1.0), False, error="`sigma`"),
    Case("frozen a number", put("envelope.x.n_const.frozen", 1), False, error="true or false"),
    Case("unit a number", put("envelope.x.jet_pt.unit", 3), False, error="a string"),
    Case("groups not a list", put("envelope.x.groups", GROUP), False, error="must be a list"),
    Case(
        "group without features",
        put("envelope.x.groups", [{"coherent": True, "relative": 0.1}]),
        False,
        error="`features`",
    ),
    # --- [attacks.*] ---------------------------------------------------------------------
    Case("attack method choice", put("attacks.pgd.method", "pgdd"), False, error="`pgd`"),
    Case("epsilon a bool", put("attacks.pgd.epsilon", True), False, error="must be a number"),
    Case("attack without method", drop("attacks.pgd.method"), False, error="needs a `method`"),
    Case("steps = 0", put("attacks.pgd.steps", 0), False, error="must be >= 1"),
    Case("attack unknown key", put("attacks.pgd.stepz", 3), False, error="`steps`"),
    # --- [[checks]] ----------------------------------------------------------------------
    Case("check type choice", put("checks.0.type", "fooling"), False, error="`fooling_rate`"),
    Case("check without type", drop("checks.0.type"), False, error="needs a `type`"),
    Case("max a string", put("checks.0.max", "0.05"), False, error="must be a number"),
    Case("check unknown key", put("checks.0.maxx", 0.1), False, error="unknown key `maxx`"),
    Case(
        "invariance without threshold",
        lambda d: d["checks"].append({"type": "invariance", "attack": "pgd"}),
        False,
        error="could never fail",
    ),
    # --- rules across fields and files: the parser's alone ------------------------------
    Case("model file missing", put("model.path", "gone.pt"), False, True, "file not found"),
    Case("data file missing", put("data.nominal.path", "gone.npz"), False, True, "not found"),
    Case("undefined attack", put("checks.0.attack", "pgd2"), False, True, "did you mean `pgd`"),
    Case("feature without envelope", drop("envelope.x.n_const"), False, True, "no envelope"),
    Case("min > max", put("envelope.x.jet_eta.min", 3.0), False, True, "min 3.0 > max 2.5"),
    Case("no alternative sample", lambda d: d["checks"].append(RESILIENCE), False, True, "no [d"),
    Case(
        "duplicate check names",
        lambda d: d["checks"].append(dict(d["checks"][0])),
        False,
        True,
        "duplicate check name",
    ),
    Case("unknown model input", put("inputs.y", {"perturb": False}), False, True, "unknown key"),
    Case(
        "samples with other inputs",
        put("data.alternative", {**ALTERNATIVE, "inputs": {"z": "x"}}),
        False,
        True,
        "differ from [data.nominal]",
    ),
    Case(
        "group neither coherent nor correlated",
        put("envelope.x.groups", [{"features": ["jet_pt"]}]),
        False,
        True,
        "neither coherent nor correlated",
    ),
    Case(
        "shift attack without coherent group",
        put("attacks.jes", {"method": "shift", "epsilon": 1.0}),
        False,
        True,
        "no [envelope.*] table has one",
    ),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON Schema as `robustcheck schema` prints it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    document = json.loads(out.getvalue())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the corpus names (the parser checks only that they exist)."""
    path = tmp_path_factory.mktemp("corpus")
    for name in ("tagger.pt", "data.npz", "alt.npz"):
        (path / name).write_bytes(b"")
    return path


def test_the_corpus_covers_every_section_with_good_and_bad_specs() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    assert sum(case.valid for case in CASES) >= 8
    assert sum(not case.valid and not case.cross_field for case in CASES) >= 25
    assert sum(case.cross_field for case in CASES) >= 8


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_parser_and_json_schema_agree(case: Case, schema: dict[str, Any], folder: Path) -> None:
    doc = copy.deepcopy(base_spec())
    case.change(doc)
    message = ""
    try:
        parse_spec(doc, folder / "robustness.toml")
    except SpecError as exc:
        message = str(exc)
    schema_errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert (message == "") == case.valid, message
    if not case.valid:
        assert case.error in message
    if case.valid or case.cross_field:
        assert schema_errors == [], schema_errors
    else:
        assert schema_errors, "the JSON Schema accepts a spec that the parser refuses"
