"""Regression tests for problems found in review: each one a clear message, never a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from robustcheck.core import SpecRun
from robustcheck.errors import DataError, SpecError
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events, write_spec


def test_non_finite_numbers_are_refused(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["max"] = float("nan")
    with pytest.raises(SpecError, match=r"checks\[0\].max: must be a finite number"):
        parse_spec(doc, model_dir / "robustness.toml")
    doc = base_spec(epsilon=float("inf"))
    with pytest.raises(SpecError, match="attacks.pgd.epsilon: must be a finite number"):
        parse_spec(doc, model_dir / "robustness.toml")


def test_labels_beyond_the_model_classes(tmp_path: Path, model_dir: Path) -> None:
    events = make_events(200, seed=5)
    events["y"][3] = 2
    np.savez(tmp_path / "data.npz", **events)
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    run = SpecRun(parse_spec(base_spec(), tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(DataError, match="labels go up to 2, but the model gives 2 classes"):
        run.log_probs()


def test_a_sample_with_one_class_has_no_auc(tmp_path: Path, model_dir: Path) -> None:
    events = make_events(300, seed=6)
    np.savez(tmp_path / "data.npz", **events)
    only_signal = {k: v[events["y"] == 1] for k, v in events.items()}
    np.savez(tmp_path / "alt.npz", **only_signal)
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    doc = base_spec()
    doc["data"]["alternative"] = {"path": "alt.npz", "labels": "y", "inputs": {"x": "x"}}
    doc["checks"] = [{"type": "resilience", "max_auc_change_percent": 1.0}]
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(DataError, match="the alternative sample has no background events"):
        run.run()


def test_two_specs_with_the_same_module_name_get_their_own_models(
    tmp_path: Path, model_dir: Path
) -> None:
    runs = []
    for name, scale in (("a", 1.0), ("b", -1.0)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(model_dir / "data.npz", folder / "data.npz")
        (folder / "model.py").write_text(
            "import torch\n\n"
            "def build():\n"
            "    layer = torch.nn.Linear(4, 2)\n"
            "    with torch.no_grad():\n"
            "        layer.weight.zero_()\n"
            f"        layer.bias.copy_(torch.tensor([0.0, {scale}]))\n"
            "    return layer\n"
        )
        runs.append(
            SpecRun(parse_spec(base_spec(model="model:build"), folder / "r.toml"), device="cpu")
        )
    first, second = (run.tagger.module.bias.tolist() for run in runs)
    assert first == [0.0, 1.0] and second == [0.0, -1.0]


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
