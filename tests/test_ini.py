"""Every command-line option that belongs in a config has an ini key of the same name stem,
read through one helper (plugin.get_option): the flag wins, else the ini key. Paths from a
flag are relative to where pytest was started, paths from an ini key to the ini file's folder."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from robustcheck import plugin
from tests.conftest import base_spec, write_spec

pytest_plugins = ["pytester"]


def test_every_flag_has_an_ini_key_of_the_same_stem_but_save_baseline(
    pytester: pytest.Pytester,
) -> None:
    config = pytester.parseconfig()
    assert {option.flag for option in plugin.OPTIONS} == {
        "--robustcheck",
        "--robustcheck-device",
        "--robustcheck-seed",
        "--robustcheck-report",
        "--robustcheck-baseline",
        "--robustcheck-save-baseline",
        "--robustcheck-progress",
        "--robustcheck-dask",
    }
    for option in plugin.OPTIONS:
        assert config.getoption(option.name) is None  # registered, and not given
        assert option.flag == "--" + option.name.replace("_", "-")
        if option.name == "robustcheck_save_baseline":
            assert not option.ini
            with pytest.raises(ValueError, match="unknown configuration value"):
                config.getini(option.name)
        else:
            assert option.ini
            assert config.getini(option.name) in ("", False)


def test_the_flag_wins_over_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nrobustcheck = true\nrobustcheck_device = cpu\nrobustcheck_seed = 7\n"
    )
    config = pytester.parseconfig()
    assert plugin.get_option(config, "robustcheck") is True
    assert plugin.get_option(config, "robustcheck_device") == "cpu"
    assert plugin.get_option(config, "robustcheck_seed") == 7
    config = pytester.parseconfig("--robustcheck-device=cuda:1", "--robustcheck-seed=3")
    assert plugin.get_option(config, "robustcheck_device") == "cuda:1"
    assert plugin.get_option(config, "robustcheck_seed") == 3


def test_neither_flag_nor_ini_key_gives_none(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    assert plugin.get_option(config, "robustcheck") is False
    for name in ("robustcheck_device", "robustcheck_seed", "robustcheck_save_baseline"):
        assert plugin.get_option(config, name) is None
    for name in ("robustcheck_report", "robustcheck_baseline", "robustcheck_save_baseline"):
        assert plugin.option_path(config, name) is None
    assert plugin.enabled(config) is False


def test_ini_paths_are_relative_to_the_ini_file_and_flag_paths_to_the_invocation_dir(
    pytester: pytest.Pytester,
) -> None:
    folder = pytester.mkdir("config")
    (folder / "pytest.ini").write_text(
        "[pytest]\nrobustcheck_report = reports\nrobustcheck_baseline = ref/baseline.json\n"
    )
    config = pytester.parseconfig("-c", "config/pytest.ini")
    assert config.inipath == folder / "pytest.ini"
    assert config.invocation_params.dir == pytester.path
    assert plugin.report_dir(config) == folder / "reports"
    assert plugin.option_path(config, "robustcheck_baseline") == folder / "ref/baseline.json"
    config = pytester.parseconfig(
        "-c", "config/pytest.ini", "--robustcheck-report=out", "--robustcheck-baseline=b.json"
    )
    assert plugin.report_dir(config) == pytester.path / "out"
    assert plugin.option_path(config, "robustcheck_baseline") == pytester.path / "b.json"


def test_a_seed_that_is_not_an_integer_stops_the_session(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrobustcheck_seed = seven\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key robustcheck_seed = 'seven': must be an integer*"])


def test_a_baseline_from_the_ini_file_is_looked_for_beside_it(pytester: pytest.Pytester) -> None:
    folder = pytester.mkdir("config")
    (folder / "pytest.ini").write_text(
        "[pytest]\nrobustcheck = true\nrobustcheck_baseline = baseline.json\n"
    )
    pytester.makepyfile("def test_ok():\n    assert True\n")
    result = pytester.runpytest("-c", "config/pytest.ini", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{folder / 'baseline.json'}*baseline file not found*"])


def test_the_ini_keys_run_the_checks_with_their_seed_and_report(
    pytester: pytest.Pytester, model_dir: Path
) -> None:
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    doc = base_spec()
    doc["checks"][0]["max"] = 1.0
    write_spec(pytester.path, doc)
    pytester.makeini(
        "[pytest]\nrobustcheck = true\nrobustcheck_device = cpu\nrobustcheck_seed = 11\n"
        "robustcheck_report = reports\n"
    )
    # in a subprocess: an in-process run would drop the matplotlib it imports from sys.modules
    result = pytester.runpytest_subprocess("--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    case = next(ET.parse(pytester.path / "out.xml").iter("testcase"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["seed"] == "11"
    assert (pytester.path / "reports" / "report.json").is_file()
    assert (pytester.path / "reports" / "report.html").is_file()
