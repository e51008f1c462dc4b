"""Third-party attacks and checks through the pluggy hooks: entry points and conftest files."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustcheck import registry
from robustcheck.cli import main
from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.registry import PluginError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, write_spec

EXAMPLE = Path(__file__).parents[1] / "examples" / "plugin_package"


def plugin_spec() -> dict:
    doc = base_spec()
    doc["attacks"]["jes"] = {
        "method": "energy_scale",
        "epsilon": 3.0,
        "scale_sigma": 0.05,
        "features": ["jet_pt", "jet_mass"],
    }
    doc["checks"] = [
        {"name": "scale", "type": "fooling_rate", "attack": "jes", "max": 1.0},
        {"name": "shift", "type": "max_score_shift", "attack": "jes", "max_mean_shift": 1e-6},
    ]
    return doc


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example package importable, with its entry point visible to importlib.metadata."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "robustcheck_jes", site / "robustcheck_jes")
    info = site / "robustcheck_jes-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: robustcheck-jes\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[robustcheck]\njes = robustcheck_jes.plugin\n")
    monkeypatch.syspath_prepend(str(site))
    registry.manager.cache_clear()
    registry.table.cache_clear()
    yield
    for name in [m for m in sys.modules if m.startswith("robustcheck_jes")]:
        del sys.modules[name]
    registry.manager.cache_clear()
    registry.table.cache_clear()


def test_entry_point_plugin_attack_and_check_run_from_a_spec(
    installed: None, model_dir: Path
) -> None:
    assert registry.attacks()["energy_scale"].origin == "jes"
    run = SpecRun(parse_spec(plugin_spec(), model_dir / "robustness.toml"), device="cpu")
    fooling, shift = run.run()
    assert fooling.passed and fooling.figures["n_fooled"] > 0
    assert not shift.passed and shift.figures["mean_score_shift"] > 1e-6
    adv = run.adversaries("jes")
    x, x_adv = adv.nominal["x"], adv.adversarial["x"]
    moved = adv.fooled
    ratio = x_adv[moved][:, :2] / x[moved][:, :2]
    assert bool(((ratio - 1).abs() - 0.15).abs().max() < 1e-5)  # one shared scale of 3 x 5%
    assert bool((x_adv[:, 2:] == x[:, 2:]).all())


def test_plugin_options_are_validated_like_built_ins(installed: None, model_dir: Path) -> None:
    doc = plugin_spec()
    doc["attacks"]["jes"]["scale_sigmaa"] = 0.1
    with pytest.raises(SpecError, match="did you mean `scale_sigma`"):
        parse_spec(doc, model_dir / "robustness.toml")
    doc = plugin_spec()
    doc["checks"][1]["max_mean_shift"] = "small"
    with pytest.raises(SpecError, match=r"checks\[1\].max_mean_shift: must be a number"):
        parse_spec(doc, model_dir / "robustness.toml")


def test_a_name_clash_names_both_plugins(installed: None) -> None:
    from robustcheck_jes import plugin

    class Clash:
        robustcheck_attacks = staticmethod(plugin.robustcheck_attacks)

    registry.register(Clash(), name="clashing")
    try:
        with pytest.raises(
            PluginError, match="attack 'energy_scale' is registered by both 'jes' and 'clashing'"
        ):
            registry.attacks()
    finally:
        registry.unregister(registry.manager().get_plugin("clashing"))


def test_plugins_command_lists_built_ins_and_origins(
    installed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for line in ("pgd", "constrained_pgd", "fooling_rate", "invariance", ".onnx", ".npz"):
        assert line in out
    assert "energy_scale" in out and "jes" in out


def test_conftest_plugin_in_a_pytest_run(pytester: pytest.Pytester, model_dir: Path) -> None:
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    shutil.copytree(EXAMPLE / "robustcheck_jes", pytester.path / "robustcheck_jes")
    pytester.makeconftest(
        "import sys, os\n"
        "sys.path.insert(0, os.path.dirname(__file__))\n"
        "from robustcheck_jes.plugin import robustcheck_attacks, "
        "robustcheck_checks\n"
    )
    write_spec(pytester.path, plugin_spec())
    result = pytester.runpytest_subprocess("--robustcheck", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*mean |signal probability change|*> max 1e-06*"])


def test_unmarked_conftest_hooks_are_taken(pytester: pytest.Pytester, model_dir: Path) -> None:
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    pytester.makeconftest(
        "from robustcheck.registry import Declaration\n"
        "from robustcheck.checks import CHECKS\n\n"
        "def robustcheck_checks():\n"
        "    base = CHECKS['fooling_rate']\n"
        "    return [Declaration('strict_fooling_rate', base.target, base.options)]\n"
    )
    doc = base_spec()
    doc["checks"] = [{"type": "strict_fooling_rate", "attack": "pgd", "max": 0.0}]
    write_spec(pytester.path, doc)
    result = pytester.runpytest_subprocess("--robustcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fooling rate * > max 0 *"])


# One file that adds an attack and a check type: the attack's options, the check's options,
# its regression figure, its recorded limit and that the report plots its attack.
ONE_FILE_PLUGIN = '''
import math
import os

import numpy as np

from robustcheck.attacks.base import Attack
from robustcheck.checks.base import Check
from robustcheck.declaration import Declaration, Limit, RegressionFigure
from robustcheck.schema import Field


class Nudge(Attack):
    """Every movable entry up by ``fraction`` of epsilon sigma: no gradients, no randomness."""

    needs_gradients = False

    @property
    def uses_seed(self):
        return False

    def perturb(self, batch):
        fraction = float(self.spec.options["fraction"])
        adv = {
            name: batch.nominal[name] + unit * self.epsilon * fraction
            for name, unit in batch.box.unit.items()
        }
        batch.box.project_(adv)
        return adv


class MeanShift(Check):
    """Mean |change| of the signal probability under the attack; EXTRA_SHIFT adds to it."""

    def evaluate(self):
        adv = self.run.adversaries(self.options["attack"], full=True)
        nominal = self.run.discriminant(self.run.log_probs("nominal"))
        shift = np.abs(self.run.discriminant(adv.log_probs) - nominal)
        shift = shift + float(os.environ.get("EXTRA_SHIFT", "0"))
        mean = float(shift.mean())
        error = float(shift.std(ddof=1) / math.sqrt(len(shift)))
        limit = float(self.options["max_mean_shift"])
        return self.result(
            mean <= limit,
            f"mean shift {mean:.4g}",
            figures={"mean_shift": mean, "mean_shift_error": error, "threshold": limit},
            attack=adv.description,
        )


def robustcheck_attacks():
    return [
        Declaration(
            "nudge",
            Nudge,
            {"fraction": Field("number", 0.5, doc="share of epsilon to move", minimum=0.0)},
        )
    ]


def robustcheck_checks():
    return [
        Declaration(
            "mean_shift",
            MeanShift,
            {
                "attack": Field("str", doc="name of an [attacks.NAME] table"),
                "max_mean_shift": Field("number", doc="largest allowed mean shift", minimum=0.0),
            },
            regression=RegressionFigure("mean_shift", True, error="mean_shift_error"),
            limits=(Limit("threshold", "mean |score shift|", "mean_shift", "<="),),
            plots_attack=True,
        )
    ]
'''


def one_file_spec() -> dict:
    doc = base_spec()
    doc["attacks"] = {"nudge": {"method": "nudge", "epsilon": 2.0, "fraction": 1.0}}
    doc["checks"] = [
        {
            "name": "shift",
            "type": "mean_shift",
            "attack": "nudge",
            "max_mean_shift": 1.0,
            "no_regression": True,
        }
    ]
    doc["baseline"] = "baseline.json"
    return doc


def test_a_conftest_check_with_no_regression_runs_end_to_end(
    pytester: pytest.Pytester, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new check type and attack in one conftest file: saved to a baseline, compared with
    it, a worse figure caught as a regression, and plotted in the report."""
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, pytester.path / name)
    pytester.makeconftest(ONE_FILE_PLUGIN)
    write_spec(pytester.path, one_file_spec())
    saved = pytester.runpytest_subprocess(
        "--robustcheck", "--robustcheck-save-baseline", "baseline.json"
    )
    saved.assert_outcomes(passed=1)
    entry = json.loads((pytester.path / "baseline.json").read_text())["specs"]["robustness.toml"]
    assert entry["shift"]["type"] == "mean_shift"
    assert entry["shift"]["figures"]["mean_shift"] > 0
    same = pytester.runpytest_subprocess(
        "--robustcheck", "-rA", "--robustcheck-report", str(pytester.path / "report")
    )
    same.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "report" / "report.json").read_text())
    (spec,) = report["specs"]
    (check,) = spec["checks"]
    assert check["figures"]["regression_difference"] == 0.0
    assert [c["label"] for c in check["comparisons"]] == ["mean |score shift|"]
    assert spec["attacks"]["nudge"]["histograms"]  # the type asks for its attack's plots
    monkeypatch.setenv("EXTRA_SHIFT", "0.2")
    worse = pytester.runpytest_subprocess("--robustcheck")
    worse.assert_outcomes(failed=1)
    worse.stdout.fnmatch_lines(["*regression against the baseline: mean_shift*"])


def test_a_plugin_check_type_is_in_the_json_schema(model_dir: Path) -> None:
    """The new type's options, shared ones included, need no change anywhere else."""
    from robustcheck.spec_schema import spec_json_schema

    namespace: dict = {}
    exec(compile(ONE_FILE_PLUGIN, "one_file_plugin", "exec"), namespace)
    plugin = type(sys)("one_file_plugin")
    plugin.__dict__.update(namespace)
    registry.register(plugin, name="one_file_plugin")
    try:
        schema = spec_json_schema()
        branches = schema["properties"]["checks"]["items"]["allOf"]
        (branch,) = [
            b for b in branches if b["if"]["properties"]["type"] == {"const": "mean_shift"}
        ]
        options = branch["then"]["properties"]
        assert {"name", "type", "no_regression", "attack", "max_mean_shift"} <= set(options)
        attacks = schema["properties"]["attacks"]["additionalProperties"]["allOf"]
        (nudge,) = [b for b in attacks if b["if"]["properties"]["method"]["const"] == "nudge"]
        assert {"method", "epsilon", "seed", "batch_size", "scan", "fraction"} <= set(
            nudge["then"]["properties"]
        )
        parsed = parse_spec(one_file_spec(), model_dir / "robustness.toml")
        assert parsed.checks[0].options["no_regression"] is True
        assert parsed.attacks["nudge"].options["seed"] == 0
    finally:
        registry.unregister(plugin)


def test_a_built_in_check_without_a_regression_figure_takes_no_no_regression() -> None:
    """Only a type that declares a regression figure gets the no_regression options."""
    assert "no_regression" in registry.checks()["fooling_rate"].options
    assert "no_regression" not in registry.checks()["invariance"].options
    assert registry.checks()["invariance"].options["name"].default is None
