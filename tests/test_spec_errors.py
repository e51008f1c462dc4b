"""Every mistake of a spec in one run, and keys given twice: errors naming both lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustcheck.cli import main
from robustcheck.errors import SpecError
from robustcheck.spec import SpecErrors, check_spec, load_spec, parse_spec, spec_errors
from tests.conftest import base_spec, write_spec

YAML_SPEC = """\
version: 1
model:
  path: tagger.pt
  scores: logits
  signal_class: 1
  device: cpu
data:
  nominal: {path: data.npz, labels: y, inputs: {x: x}}
inputs:
  x: {features: [jet_pt, jet_mass, jet_eta, n_const]}
envelope:
  x:
    jet_pt: {relative: 0.02, min: 0.0}
    jet_mass: {relative: 0.05, min: 0.0}
    jet_eta: {absolute: 0.05}
    n_const: {frozen: true}
attacks:
  pgd: {method: pgd, epsilon: 1.0, steps: 10}
checks:
  - name: fooling rate
    type: fooling_rate
    attack: pgd
    max: 0.05
"""


def fields(errors: list[SpecError]) -> list[str | None]:
    return [error.field for error in errors]


def test_yaml_key_given_twice_names_the_key_path_and_both_lines(model_copy: Path) -> None:
    text = YAML_SPEC.replace("  device: cpu\n", "  device: cpu\n  signal_class: 0\n")
    path = model_copy / "twice.robust.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    error = info.value
    assert error.field == "model.signal_class"
    assert error.message == "duplicate key `signal_class`: given on line 5 and again on line 7"
    assert str(error).startswith(f"{path}: model.signal_class: duplicate key")
    assert error.fix is not None and "keep one" in error.fix


def test_yaml_duplicates_in_lists_and_at_the_top_level(model_copy: Path) -> None:
    path = model_copy / "twice_check.robust.yaml"
    path.write_text(YAML_SPEC + "    name: again\n")
    (error,) = spec_errors(path)
    assert error.field == "checks[0].name"
    assert "given on line 20 and again on line 24" in error.message
    path.write_text(YAML_SPEC + "version: 1\n")
    (error,) = spec_errors(path)
    assert error.field == "version" and "line 1 and again on line 24" in error.message


def test_yaml_merge_keys_may_be_overridden(model_copy: Path) -> None:
    text = YAML_SPEC.replace(
        "attacks:\n  pgd: {method: pgd, epsilon: 1.0, steps: 10}\n",
        "attacks:\n  base: &base {method: pgd, epsilon: 1.0, steps: 10}\n"
        "  pgd:\n    <<: *base\n    epsilon: 0.5\n",
    )
    path = model_copy / "merge.robust.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.attacks["pgd"].epsilon == 0.5 and spec.attacks["base"].epsilon == 1.0


def test_toml_key_given_twice_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "robustness.toml"
    path.write_text('version = 1\n[model]\npath = "a.pt"\nsignal_class = 1\nsignal_class = 0\n')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: cannot parse: Cannot overwrite a value")
    assert "line 5" in str(info.value)
    assert info.value.fix == "a key or table is given twice: keep one"


def three_mistakes() -> dict[str, Any]:
    doc = base_spec()
    doc["model"]["signal_clas"] = 1  # unknown model key
    doc["data"]["nominal"]["path"] = "missing.npz"  # a data file that is not there
    doc["checks"][0]["type"] = "fooling_rat"  # a check of unknown type
    return doc


def test_every_independent_error_is_reported(model_copy: Path) -> None:
    path = write_spec(model_copy, three_mistakes(), "three.robust.toml")
    errors = spec_errors(path)
    assert fields(errors) == ["model", "data.nominal.path", "checks[0].type"]
    assert [e.message for e in errors] == [
        "unknown key `signal_clas`",
        f"file not found: {model_copy / 'missing.npz'}",
        "unknown key `fooling_rat`",
    ]
    assert errors[0].fix == "did you mean `signal_class`?"
    assert errors[2].fix == "did you mean `fooling_rate`?"
    assert all(e.file == str(path) for e in errors)
    spec, found = check_spec(path)
    assert spec is None and fields(found) == fields(errors)


def test_load_spec_reads_as_the_first_error_then_lists_the_others(model_copy: Path) -> None:
    path = write_spec(model_copy, three_mistakes(), "three_load.robust.toml")
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    error = info.value
    assert isinstance(error, SpecError)
    assert (error.message, error.field) == ("unknown key `signal_clas`", "model")
    assert [e.field for e in error.errors] == ["model", "data.nominal.path", "checks[0].type"]
    assert str(error) == (
        f"{path}: model: unknown key `signal_clas`\n"
        "  fix: did you mean `signal_class`?\n"
        "and 2 more errors in the same spec:\n"
        f"  2. data.nominal.path: file not found: {model_copy / 'missing.npz'}\n"
        "     fix: paths are relative to the spec file's folder\n"
        "  3. checks[0].type: unknown key `fooling_rat`\n"
        "     fix: did you mean `fooling_rate`?"
    )
    # parse_spec, on a document, raises the same
    with pytest.raises(SpecErrors, match="unknown key `signal_clas`"):
        parse_spec(three_mistakes(), path)


def test_validate_prints_every_error_numbered(
    model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_spec(model_copy, three_mistakes(), "three_cli.robust.toml")
    good = write_spec(model_copy, base_spec(), "fine_cli.robust.toml")
    assert main(["validate", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"spec error: 3 errors in {bad}:\n"
        "  1. model: unknown key `signal_clas`\n"
        "     fix: did you mean `signal_class`?\n"
        f"  2. data.nominal.path: file not found: {model_copy / 'missing.npz'}\n"
        "     fix: paths are relative to the spec file's folder\n"
        "  3. checks[0].type: unknown key `fooling_rat`\n"
        "     fix: did you mean `fooling_rate`?\n"
    )
    assert f"{good}: ok (1 checks, 1 attacks)" in captured.out  # the next spec is still checked
    doc = base_spec()
    doc["model"]["path"] = "missing.pt"
    one = write_spec(model_copy, doc, "one_cli.robust.toml")
    assert main(["validate", str(one)]) == 2
    assert capsys.readouterr().err.startswith(f"spec error: 1 error in {one}:\n  1. model.path")


def test_every_bad_key_of_one_table(model_copy: Path) -> None:
    doc = base_spec()
    doc["model"]["scores"] = "logit"
    doc["model"]["signal_class"] = "1"
    doc["model"]["colour"] = "blue"
    errors = spec_errors(write_spec(model_copy, doc, "model_keys.robust.toml"))
    assert fields(errors) == ["model", "model.scores", "model.signal_class"]
    assert "did you mean `logits`?" in (errors[1].fix or "")


def test_a_misspelt_required_key_is_one_error_not_two(model_copy: Path) -> None:
    doc = base_spec()
    doc["attacks"]["pgd"]["epsillon"] = doc["attacks"]["pgd"].pop("epsilon")
    (error,) = spec_errors(write_spec(model_copy, doc, "misspelt.robust.toml"))
    assert error.message == "unknown key `epsillon`" and error.fix == "did you mean `epsilon`?"


def test_parts_that_depend_on_a_broken_part_are_skipped(model_copy: Path) -> None:
    # the nominal sample's inputs are broken: [inputs] and [envelope] cannot be checked
    doc = base_spec()
    doc["data"]["nominal"]["inputs"] = {"x": 3}
    doc["inputs"]["x"]["features"].append("extra")  # would lack an envelope
    errors = spec_errors(write_spec(model_copy, doc, "dep_data.robust.toml"))
    assert fields(errors) == ["data.nominal.inputs.x"]
    # a broken attack: the check that uses it is not reported for it
    doc = base_spec()
    doc["attacks"]["pgd"]["steps"] = -1
    errors = spec_errors(write_spec(model_copy, doc, "dep_attack.robust.toml"))
    assert fields(errors) == ["attacks.pgd.steps"]
    # a broken [inputs.x]: its envelope is skipped, other parts are still checked
    doc = base_spec()
    doc["inputs"]["x"]["features"] = "jet_pt"
    doc["checks"][0]["max"] = 2.0
    errors = spec_errors(write_spec(model_copy, doc, "dep_inputs.robust.toml"))
    assert fields(errors) == ["inputs.x.features", "checks[0].max"]
    # a broken [data.alternative]: a resilience check does not say it is missing
    doc = base_spec()
    doc["data"]["alternative"] = {"path": "alt.npz", "labels": "y", "inputs": {"x": "x"}, "tre": 1}
    doc["checks"].append({"type": "resilience", "max_auc_change_percent": 2.0})
    errors = spec_errors(write_spec(model_copy, doc, "dep_alt.robust.toml"))
    assert fields(errors) == ["data.alternative"]


def test_envelope_errors_of_every_feature_and_input(model_copy: Path) -> None:
    doc = base_spec()
    doc["envelope"]["x"]["jet_pt"] = {"min": 0.0}  # no sigma
    doc["envelope"]["x"]["jet_mass"] = {"relative": -0.1}  # negative sigma
    doc["envelope"]["x"]["jet_eta"]["absolute"] = "0.05"  # wrong type
    doc["envelope"]["y"] = {}  # no such input
    errors = spec_errors(write_spec(model_copy, doc, "envelope_all.robust.toml"))
    assert fields(errors) == [
        "envelope",
        "envelope.x.jet_pt",
        "envelope.x.jet_mass.relative",
        "envelope.x.jet_eta.absolute",
    ]
    assert [e.message for e in errors][:2] == ["unknown key `y`", "no uncertainty given"]


def test_a_valid_spec_has_no_errors(model_copy: Path) -> None:
    path = write_spec(model_copy, base_spec(), "valid_errors.robust.toml")
    assert spec_errors(path) == []
    spec, errors = check_spec(path)
    assert spec is not None and errors == []
    assert spec_errors(model_copy / "nothere.robust.toml")[0].message == "spec file not found"
