"""Sanity gates: a broken setup fails every check of its spec with one clear message."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from robustcheck.cli import main
from robustcheck.core import SpecRun
from robustcheck.errors import DataError, SpecError
from robustcheck.sanity import GATE_Z, SanityError
from robustcheck.spec import parse_spec
from robustcheck.stats import auc_standard_error
from tests.conftest import base_spec, make_events, write_spec


class Wrapped(torch.nn.Module):
    """The trained MLP with its outputs changed: ``how`` picks the change."""

    def __init__(self, mlp: torch.nn.Module, how: str) -> None:
        super().__init__()
        self.mlp = mlp
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(x)
        if self.how == "nan":
            return z * float("nan")
        if self.how == "biased":  # AUC intact, but every event decided class 1
            return z + torch.tensor([0.0, 50.0])
        if self.how == "three_classes":
            return torch.cat([z, z[:, :1] - 2.0], dim=1)
        if self.how == "softmax":
            return torch.softmax(z, dim=1)
        if self.how == "logit":  # one raw logit
            return z[:, 1:] - z[:, :1]
        raise ValueError(self.how)


def save(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.zeros(4, 4)), str(path))
    return path


@pytest.fixture(scope="module")
def mlp(model_dir: Path) -> torch.nn.Module:
    from tests.conftest import MLP_SOURCE

    namespace: dict[str, Any] = {}
    exec(MLP_SOURCE, namespace)
    model = namespace["build"]()
    model.load_state_dict(torch.load(model_dir / "state.pt", weights_only=True))
    return model.eval()


def make_run(
    folder: Path,
    model_dir: Path,
    model: str | Path = "tagger.pt",
    data: dict[str, np.ndarray] | None = None,
    **model_keys: Any,
) -> SpecRun:
    """A spec in ``folder`` over a model (absolute, or in model_dir) and data (or model_dir's)."""
    doc = base_spec()
    doc["model"] = {"path": str(Path(model_dir, model)), **model_keys}
    if data is not None:
        np.savez(folder / "events.npz", **data)
        doc["data"]["nominal"]["path"] = "events.npz"
    else:
        doc["data"]["nominal"]["path"] = str(model_dir / "data.npz")
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def events_of(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / "data.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}


def test_a_working_tagger_passes_and_its_figures_match_sklearn(
    tmp_path: Path, model_dir: Path
) -> None:
    run = make_run(tmp_path, model_dir)
    nominal = run.sanity()
    events = events_of(model_dir)
    probs = run.log_probs().exp().numpy()
    assert nominal.auc == pytest.approx(roc_auc_score(events["y"], probs[:, 1]), abs=1e-12)
    n_signal = int(events["y"].sum())
    error = auc_standard_error(nominal.auc, n_signal, len(events["y"]) - n_signal)
    assert nominal.auc_error == pytest.approx(error)
    decisions = probs.argmax(1)
    assert nominal.accuracy == pytest.approx((decisions == events["y"]).mean())
    assert nominal.balanced_accuracy == pytest.approx(
        balanced_accuracy_score(events["y"], decisions)
    )
    assert nominal.majority_rate == pytest.approx(np.bincount(events["y"]).max() / 3000)
    result = run.run_check(run.spec.checks[0])
    assert result.nominal is not None and result.nominal["auc"] == nominal.auc
    assert "nominal AUC 0.99" in nominal.line() and "3,000 events" in nominal.line()


def test_nan_outputs_fail_every_check(tmp_path: Path, model_dir: Path, mlp: Any) -> None:
    path = save(Wrapped(mlp, "nan"), tmp_path / "nan.pt")
    run = make_run(tmp_path, model_dir, path)
    with pytest.raises(SanityError, match=r"NaN or infinite scores for 3,000 of 3,000"):
        run.run_check(run.spec.checks[0])
    # the finite gate cannot be skipped
    with pytest.raises(SpecError, match="'finite' is not one of 'scores', 'classes'") as info:
        make_run(tmp_path, model_dir, path, skip_gates=["finite"])
    assert info.value.field == "model.skip_gates"
    with pytest.raises(SpecError, match="did you mean `accuracy`"):
        make_run(tmp_path, model_dir, path, skip_gates=["acuracy"])


def test_probabilities_declared_on_logits(tmp_path: Path, model_dir: Path) -> None:
    run = make_run(tmp_path, model_dir, scores="probabilities")
    with pytest.raises(SanityError, match='scores = "probabilities", but the outputs are not'):
        run.run()


def test_sigmoid_declared_on_a_raw_logit(tmp_path: Path, model_dir: Path, mlp: Any) -> None:
    path = save(Wrapped(mlp, "logit"), tmp_path / "logit.pt")
    with pytest.raises(SanityError, match=r"outside \[0, 1\]"):
        make_run(tmp_path, model_dir, path, scores="sigmoid").run()
    assert make_run(tmp_path, model_dir, path, scores="binary_logit").sanity().passed


def test_logits_that_look_like_probabilities_warn(
    tmp_path: Path, model_dir: Path, mlp: Any
) -> None:
    path = save(Wrapped(mlp, "softmax"), tmp_path / "softmax.pt")
    run = make_run(tmp_path, model_dir, path)
    result = run.run_check(run.spec.checks[0])
    assert any('set scores = "probabilities"' in line for line in result.details)
    assert make_run(tmp_path, model_dir, path, scores="probabilities").nominal.warnings == []


@pytest.mark.parametrize("order", [(3, 2, 1, 0), (0, 1, 3, 2)])
def test_features_in_the_wrong_order(tmp_path: Path, model_dir: Path, order: tuple) -> None:
    # with the columns in another order the fooling rate would be 0 of ~1,500 correct events
    events = events_of(model_dir)
    events["x"] = events["x"][:, list(order)]
    run = make_run(tmp_path, model_dir, data=events)
    with (
        pytest.raises(SanityError, match="not significantly above 0.5") as info,
        pytest.warns(UserWarning, match="jet_eta 3,000 \\(min -2.5, max 2.5"),  # a clue too
    ):
        run.run()
    assert "order the model was trained on" in str(info.value)
    assert run.nominal.auc is not None and run.nominal.auc < 0.5 + GATE_Z * 0.011


def test_every_event_one_label(tmp_path: Path, model_dir: Path, mlp: Any) -> None:
    path = save(Wrapped(mlp, "biased"), tmp_path / "biased.pt")
    run = make_run(tmp_path, model_dir, path)
    with pytest.raises(SanityError, match="gives every nominal event class 1") as info:
        run.run()
    assert run.nominal.auc is not None and run.nominal.auc > 0.95  # the AUC alone looks fine
    assert "majority class" in str(info.value)
    # switched off on purpose: the verdict says so
    run = make_run(tmp_path, model_dir, path, skip_gates=["accuracy"])
    result = run.run_check(run.spec.checks[0])
    assert "sanity gates skipped ([model] skip_gates): accuracy" in result.details
    assert result.nominal is not None and result.nominal["skipped_gates"] == ["accuracy"]


def test_three_class_model_on_binary_labels(tmp_path: Path, model_dir: Path, mlp: Any) -> None:
    path = save(Wrapped(mlp, "three_classes"), tmp_path / "three.pt")
    with pytest.raises(SanityError, match=r"class\(es\) \[2\] never occur"):
        make_run(tmp_path, model_dir, path).run()


def test_inputs_in_the_wrong_units(tmp_path: Path, model_dir: Path) -> None:
    events = events_of(model_dir)
    events["x"] = events["x"] * np.float32(1e30)
    with (
        pytest.raises(SanityError, match="saturated"),
        pytest.warns(UserWarning, match="outside the envelope's bounds"),
    ):
        make_run(tmp_path, model_dir, data=events).run()


def test_min_auc_and_min_accuracy_tighten(tmp_path: Path, model_dir: Path) -> None:
    nominal = make_run(tmp_path, model_dir).nominal
    with pytest.raises(SanityError, match="below \\[model\\] min_auc 0.999"):
        make_run(tmp_path, model_dir, min_auc=0.999).run()
    with pytest.raises(SanityError, match="below \\[model\\] min_accuracy 0.99"):
        make_run(tmp_path, model_dir, min_accuracy=0.99).run()
    assert nominal.accuracy < 0.99 and nominal.auc is not None and nominal.auc < 0.999
    assert make_run(tmp_path, model_dir, min_auc=0.9, min_accuracy=0.9).sanity().passed


def test_one_class_sample_has_no_auc(tmp_path: Path, model_dir: Path) -> None:
    events = events_of(model_dir)
    keep = events["y"] == 1
    events = {"x": events["x"][keep], "y": events["y"][keep]}
    with pytest.raises(SanityError, match="holds only signal events"):
        make_run(tmp_path, model_dir, data=events, skip_gates=["classes"]).run()


def test_values_outside_the_bounds_warn_or_fail(tmp_path: Path, model_dir: Path) -> None:
    events = events_of(model_dir)
    events["x"][:7, 1] = -1.0  # jet_mass below its min of 0
    events["x"][:2, 2] = 3.0  # jet_eta above its max of 2.5
    run = make_run(tmp_path, model_dir, data=events)
    with pytest.warns(UserWarning, match="9 entries lie outside the envelope's bounds"):
        result = run.run_check(run.spec.checks[0])
    text = "\n".join(result.details)
    assert "jet_mass 7 (min 0; extreme value -1)" in text
    assert "jet_eta 2 (min -2.5, max 2.5; extreme value 3)" in text
    doc = base_spec()
    doc["model"]["path"] = str(model_dir / "tagger.pt")
    doc["data"]["nominal"].update(path="events.npz", strict_bounds=True)
    strict = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    with pytest.raises(DataError, match="9 entries lie outside") as info:
        strict.run()
    assert info.value.field == "data.nominal.strict_bounds"


def test_the_gate_runs_once_and_fails_each_pytest_item(
    pytester: pytest.Pytester, model_dir: Path, mlp: Any
) -> None:
    path = save(Wrapped(mlp, "nan"), pytester.path / "nan.pt")
    doc = base_spec(model=path.name)
    doc["data"]["nominal"]["path"] = str(model_dir / "data.npz")
    doc["checks"].append({"name": "second", "type": "fooling_rate", "attack": "pgd", "max": 1.0})
    write_spec(pytester.path, doc)
    result = pytester.runpytest_inprocess("--robustcheck", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*sanity gate*NaN or infinite scores for 3,000 of 3,000*"])


def test_command_line_exits_2_on_a_failed_gate(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = events_of(model_dir)
    events["x"] = events["x"][:, ::-1].copy()
    np.savez(tmp_path / "events.npz", **events)
    doc = base_spec()
    doc["model"]["path"] = str(model_dir / "tagger.pt")
    doc["data"]["nominal"]["path"] = "events.npz"
    spec = write_spec(tmp_path, doc)
    with pytest.warns(UserWarning, match="outside the envelope's bounds") as seen:
        assert main(["run", str(spec)]) == 2
    assert seen[0].filename == str(spec)  # shown at the spec, not inside robustcheck
    captured = capsys.readouterr()
    assert "the tagger is at chance" in captured.out + captured.err


def test_a_real_tagger_on_imbalanced_data_passes(tmp_path: Path, model_dir: Path) -> None:
    # one signal event in ten: the accuracy gate reads the balanced accuracy, so a working
    # tagger whose argmax suits a balanced mix is not refused
    events = make_events(4000, seed=9)
    keep = (events["y"] == 0) | (np.arange(4000) % 9 == 0)
    events = {k: v[keep] for k, v in events.items()}
    run = make_run(tmp_path, model_dir, data=events)
    assert run.sanity().passed
    assert run.nominal.majority_rate > 0.8
