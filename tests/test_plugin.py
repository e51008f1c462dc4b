"""The pytest plugin end to end, through pytester."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import base_spec, write_spec

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester, model_dir: Path) -> pytest.Pytester:
    """A user's folder: the model, its data and a spec with a failing and a passing check."""
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    doc = base_spec()
    doc["checks"] = [
        {"name": "strict", "type": "fooling_rate", "attack": "pgd", "max": 0.0},
        {"type": "fooling_rate", "attack": "pgd", "max": 1.0},
    ]
    write_spec(pytester.path, doc)
    return pytester


def test_items_are_skipped_without_the_flag(project: pytest.Pytester) -> None:
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*robustness checks run only with --robustcheck*"])


def test_flag_runs_checks_with_actionable_messages(project: pytest.Pytester) -> None:
    result = project.runpytest("--robustcheck", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*robustness.toml::strict FAILED*",
            "*robustness.toml::fooling_rate_1 PASSED*",
            "*fooling rate * (95% CL *-*) over * events > max 0 "
            "| attack pgd eps=1 sigma, 10 steps*",
            "*largest mean |shift| of the * fooled events: *sigma*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_ini_option_enables_the_run(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nrobustcheck = true\n")
    project.runpytest().assert_outcomes(passed=1, failed=1)


def test_junit_properties_and_seed_override(project: pytest.Pytester) -> None:
    project.runpytest("--robustcheck", "--robustcheck-seed=11", "--junitxml=out.xml")
    tree = ET.parse(project.path / "out.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    assert set(cases) == {"strict", "fooling_rate_1"}
    for case in cases.values():
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        for key in ("fooling_rate", "ci_low", "ci_high", "n_events", "threshold"):
            assert key in props
        assert props["seed"] == "11"
        assert float(props["ci_low"]) <= float(props["fooling_rate"]) <= float(props["ci_high"])
    assert cases["strict"].find("failure") is not None
    assert cases["fooling_rate_1"].find("failure") is None


def test_broken_spec_is_a_short_collection_error(project: pytest.Pytester) -> None:
    doc = base_spec()
    doc["checks"][0]["maxx"] = 0.1
    write_spec(project.path, doc, "broken.robust.toml")
    result = project.runpytest("--robustcheck")
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting broken.robust.toml*",
            "spec error: *broken.robust.toml: checks[[]0[]]: unknown key `maxx`",
            "  fix: did you mean `max`?",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_broken_spec_without_the_flag_is_one_skipped_item(project: pytest.Pytester) -> None:
    doc = base_spec()
    doc["checks"][0]["maxx"] = 0.1
    write_spec(project.path, doc, "broken.robust.toml")
    project.makepyfile("def test_unrelated():\n    assert True\n")
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=3)  # the 2 checks of robustness.toml, 1 broken
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*broken robustness spec, not run without --robustcheck: spec error: *broken.robust"
            ".toml: checks[[]0[]]: unknown key `maxx`*"
        ]
    )


def test_items_carry_a_marker_and_ids_that_k_selects_by_words(
    project: pytest.Pytester,
) -> None:
    doc = base_spec()
    doc["checks"] = [
        {"name": "fooling within 1 sigma", "type": "fooling_rate", "attack": "pgd", "max": 1.0},
        {"name": "fooling within 1-sigma", "type": "fooling_rate", "attack": "pgd", "max": 1.0},
        {"name": "fooling: within 1 sigma!", "type": "fooling_rate", "attack": "pgd", "max": 1.0},
    ]
    write_spec(project.path, doc)
    project.makepyfile("def test_unrelated():\n    assert True\n")
    markers = project.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.robustcheck: a check of a robustness spec*"])
    listed = project.runpytest("--co", "-q", "-m", "robustcheck")
    listed.stdout.fnmatch_lines(
        [
            "robustness.toml::fooling_within_1_sigma",
            "robustness.toml::fooling_within_1-sigma",
            "robustness.toml::fooling_within_1_sigma_2",
            "3/4 tests collected (1 deselected)*",
        ]
    )
    picked = project.runpytest("--robustcheck", "-k", "within_1_sigma and not sigma_2")
    picked.assert_outcomes(passed=1, deselected=3)
    picked.stdout.fnmatch_lines(["PASSED  robustness.toml::fooling within 1 sigma"])  # as named
    words = project.runpytest("--co", "-q", "-k", "fooling and within and 1")
    words.stdout.fnmatch_lines(["3/4 tests collected (1 deselected)*"])


def test_collect_only_with_a_report_folder_says_nothing_about_the_report(
    project: pytest.Pytester,
) -> None:
    project.makeini("[pytest]\nrobustcheck = true\nrobustcheck_report = out\n")
    result = project.runpytest("--co", "-q")
    assert "no check ran" not in result.stdout.str()
    assert not (project.path / "out").exists()


def test_model_error_fails_the_item_without_traceback(
    project: pytest.Pytester, model_dir: Path
) -> None:
    doc = base_spec(model="tagger.pt")
    doc["inputs"]["x"]["features"] = ["a", "b", "c"]
    doc["envelope"]["x"] = {k: {"absolute": 1.0} for k in "abc"}
    write_spec(project.path, doc)
    result = project.runpytest("--robustcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*data error: *input `x` has shape (3000, 4), but [[]inputs.x[]] names 3 features*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_plugin_import_is_light() -> None:
    code = (
        "import sys, robustcheck.plugin, robustcheck.spec\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'scipy', 'numpy', 'onnx2torch')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_collection_without_specs_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    assert True\n")
    pytester.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    heavy = [m for m in ('torch', 'onnxruntime', 'scipy') if m in sys.modules]\n"
        "    print('HEAVY:' + ','.join(heavy))\n"
    )
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r".*HEAVY:$"])  # nothing listed after the colon


def test_example_folder_runs(pytester: pytest.Pytester) -> None:
    example = Path(__file__).parents[1] / "examples" / "quickstart"
    shutil.copytree(example, pytester.path / "quickstart")
    before = {
        p.name: p.read_bytes() for p in (pytester.path / "quickstart").iterdir() if p.is_file()
    }
    result = pytester.runpytest("--robustcheck", "-v", "quickstart")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines_random(
        [
            "*tagger.robust.toml::fooling_rate_within_1_sigma PASSED*",
            "*tagger.robust.toml::fooling_rate_within_3_sigma FAILED*",
            "*hidden_systematics.robust.toml::plain_PGD_histograms_change FAILED*",
            "*hidden_systematics.robust.toml::hidden_PGD_histograms_unchanged PASSED*",
            "*hidden_systematics.robust.toml::hidden_PGD_fooling_rate FAILED*",
        ]
    )
    after = {name: (pytester.path / "quickstart" / name).read_bytes() for name in before}
    assert after == before
    # the main README quotes this run's output: a figure it no longer prints fails here
    quote = _quickstart_quote()
    helpers = quote.markers()
    readme = quote.README
    quoted = [b for b in helpers.blocks(readme.read_text(), readme) if b.run == quote.RUN]
    assert [b.name for b in quoted] == [quote.TABLE]
    printed = {quote.TABLE: quote.excerpt(result.stdout.str())}
    stale = helpers.stale_blocks(readme, quote.RUN, printed)
    assert not stale, "refresh with `python examples/quickstart/quote.py`:\n" + "\n".join(stale)


def _quickstart_quote() -> ModuleType:
    """``examples/quickstart/quote.py``, which cuts the README's excerpt from pytest's output."""
    path = Path(__file__).parents[1] / "examples" / "quickstart" / "quote.py"
    spec = importlib.util.spec_from_file_location("quickstart_quote", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unwritable_baseline_does_not_crash_a_passing_run(
    pytester: pytest.Pytester, model_dir: Path
) -> None:
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    doc = base_spec()
    doc["checks"][0]["max"] = 1.0
    write_spec(pytester.path, doc)
    (pytester.path / "taken").mkdir()
    result = pytester.runpytest_subprocess("--robustcheck", "--robustcheck-save-baseline=taken")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*robustcheck baseline: cannot write the baseline *taken*"])
