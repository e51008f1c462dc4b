"""Spec validation: every mistake gets one message naming the file, the field and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from robustcheck.errors import SpecError
from robustcheck.spec import is_import_path, is_spec_file, load_spec, parse_spec
from tests.conftest import base_spec, write_spec


def spec_error(model_dir: Path, doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(doc, model_dir / "robustness.toml")
    return str(info.value)


def test_valid_spec_loads_from_toml_and_yaml(model_copy: Path) -> None:
    doc = base_spec()
    for name in ("robustness.toml", "tagger.robust.yaml"):
        path = write_spec(model_copy, doc, name)
        spec = load_spec(path)
        assert spec.model.path == "tagger.pt"
        assert spec.inputs["x"].features == ("jet_pt", "jet_mass", "jet_eta", "n_const")
        assert spec.envelope["x"]["n_const"].frozen
        assert spec.attacks["pgd"].options["steps"] == 10
        assert spec.checks[0].name == "fooling rate"


def test_unknown_key_suggests_the_closest(model_dir: Path) -> None:
    doc = base_spec()
    doc["attacks"]["pgd"]["epsillon"] = doc["attacks"]["pgd"].pop("epsilon")
    message = spec_error(model_dir, doc)
    assert "robustness.toml: attacks.pgd: unknown key `epsillon`" in message
    assert "did you mean `epsilon`?" in message


def test_unknown_check_type_and_attack_method(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["type"] = "fooling_rat"
    assert "did you mean `fooling_rate`" in spec_error(model_dir, doc)
    doc = base_spec()
    doc["attacks"]["pgd"]["method"] = "pdg"
    assert "did you mean `pgd`" in spec_error(model_dir, doc)


def test_wrong_type_names_field(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["max"] = "5%"
    message = spec_error(model_dir, doc)
    assert "checks[0].max: must be a number, got '5%'" in message


def test_out_of_range(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["max"] = 1.5
    assert "checks[0].max: must be <= 1.0" in spec_error(model_dir, doc)
    doc = base_spec(epsilon=-1.0)
    assert "attacks.pgd.epsilon: must be >= 0.0" in spec_error(model_dir, doc)


def test_missing_files(model_dir: Path) -> None:
    doc = base_spec(model="nothere.onnx")
    assert "model.path: file not found" in spec_error(model_dir, doc)
    doc = base_spec()
    doc["data"]["nominal"]["path"] = "missing.npz"
    message = spec_error(model_dir, doc)
    assert "data.nominal.path: file not found" in message
    assert "relative to the spec file" in message
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(model_dir / "absent.robust.toml")


def test_missing_envelope_entries_are_listed(model_dir: Path) -> None:
    doc = base_spec()
    del doc["envelope"]["x"]["jet_mass"]
    del doc["envelope"]["x"]["n_const"]
    message = spec_error(model_dir, doc)
    assert "envelope.x: no envelope for 2 feature(s): jet_mass, n_const" in message
    doc = base_spec()
    doc["envelope"]["x"]["jet_mass"] = {"min": 0.0}
    assert "envelope.x.jet_mass: no uncertainty given" in spec_error(model_dir, doc)


def test_undefined_attack_and_missing_sections(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["attack"] = "pgd2"
    assert "checks[0].attack: unknown key `pgd2`" in spec_error(model_dir, doc)
    doc = base_spec()
    del doc["checks"]
    assert "missing section [checks]" in spec_error(model_dir, doc)
    doc = base_spec()
    doc["version"] = 2
    assert "unsupported spec version 2" in spec_error(model_dir, doc)


def test_duplicate_check_names_and_default_names(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"].append(copy.deepcopy(doc["checks"][0]))
    assert "duplicate check name 'fooling rate'" in spec_error(model_dir, doc)
    doc["checks"][1].pop("name")
    spec = parse_spec(doc, model_dir / "robustness.toml")
    assert [c.name for c in spec.checks] == ["fooling rate", "fooling_rate[1]"]


def test_parse_errors_carry_the_file(tmp_path: Path) -> None:
    path = tmp_path / "robustness.toml"
    path.write_text("[model\npath = 1")
    with pytest.raises(SpecError, match="robustness.toml: cannot parse"):
        load_spec(path)


def test_spec_names_and_import_paths() -> None:
    for name in ("robustness.toml", "robustness.yaml", "tagger.robust.toml", "a.robust.yml"):
        assert is_spec_file(Path(name))
    for name in ("robust.toml", "pyproject.toml", "robustness.json"):
        assert not is_spec_file(Path(name))
    assert is_import_path("pkg.mod:build")
    assert not is_import_path("tagger.onnx")
    assert not is_import_path("C:/models/tagger.onnx")


def test_non_finite_numbers_are_refused(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["max"] = float("nan")
    with pytest.raises(SpecError, match=r"checks\[0\].max: must be a finite number"):
        parse_spec(doc, model_dir / "robustness.toml")
    doc = base_spec(epsilon=float("inf"))
    with pytest.raises(SpecError, match="attacks.pgd.epsilon: must be a finite number"):
        parse_spec(doc, model_dir / "robustness.toml")


def test_spec_file_names_have_one_definition(pytester: pytest.Pytester) -> None:
    """pytest collects exactly the files that ``is_spec_file`` names (the plugin has no copy)."""
    from robustcheck import plugin

    assert plugin.is_spec_file is is_spec_file
    assert not hasattr(plugin, "SPEC_FILE")
    names = ["robustness.toml", "jets.robust.yaml", "robust.toml", "robustness.json"]
    for name in names:
        (pytester.path / name).write_text("version = 1\n")
    collector = pytester.getpathnode(pytester.path)
    collected = {
        p.name for p in pytester.path.iterdir() if plugin.pytest_collect_file(p, collector)
    }
    assert collected == {n for n in names if is_spec_file(Path(n))}
    assert collected == {"robustness.toml", "jets.robust.yaml"}
