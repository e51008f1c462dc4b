"""`robustcheck init`: every guess is a TODO, and the guessed wiring is checked on the model."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcheck.cli import main
from robustcheck.spec import load_spec
from robustcheck.stats import auc

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SecondFeature(torch.nn.Module):
    """Signal logit 2 * (x[:, 1] - 5): only the second feature counts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 2.0 * (x[:, 1] - 5.0)
        return torch.stack([torch.zeros_like(s), s], dim=1)


class MaskedSum(torch.nn.Module):
    """Signal when the summed first feature of the real entries exceeds 25."""

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = ((parts[..., 0] * mask).sum(1) - 25.0) / 5.0
        return torch.stack([torch.zeros_like(s), s], dim=1)


def save_script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recent torch deprecates TorchScript
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def columns(n: int = 2000, seed: int = 4, reverse: bool = False) -> dict[str, np.ndarray]:
    """Labels, a feature that separates the classes, and one that carries nothing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = -1.0 if reverse else 1.0
    return {
        "signal": rng.normal(5.0 + sign * 1.5 * (2 * y - 1), 1.0),
        "noise": rng.normal(5.0, 1.0, n),
        "y": y,
    }


def write_root(path: Path, branches: dict[str, np.ndarray]) -> Path:
    """A TTree `Events` whose branches are in the order of ``branches``."""
    uproot = pytest.importorskip("uproot")
    with uproot.recreate(path) as handle:
        handle.mktree("Events", {k: v.dtype for k, v in branches.items()}).extend(branches)
    return path


def init(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    assert main(["init", *argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def todo_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "# TODO: guessed" in line]


def test_every_guess_is_a_todo_and_a_misordered_file_is_a_tagger_at_chance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_script(SecondFeature(), tmp_path / "tagger.pt")
    events = columns()
    # the file holds the model's two features in the wrong order: `signal` first
    data = write_root(tmp_path / "jets.root", {k: events[k] for k in ("signal", "noise", "y")})
    target = tmp_path / "jets.robust.toml"
    out, err = init(capsys, str(model), str(data), "-o", str(target))
    text = target.read_text()
    doc = tomllib.loads(text)
    assert doc["data"]["nominal"]["inputs"] == {"x": ["signal", "noise"]}
    lines = todo_lines(text)
    guesses = {
        "signal_class": r"^signal_class = 1  # TODO: guessed: the highest label",
        "scores": r'^scores = "logits"  # TODO: guessed; check what the output holds',
        "labels": r'^labels = "y"  # TODO: guessed: named like labels: a 1-D array of 2 integer',
        "input": r"^# TODO: guessed: model input `x` takes the 2 columns signal, noise stacked "
        r"in file order; check$",
        "order": r'^features = \["signal", "noise"\]  # TODO: guessed order: the file\'s order',
        "sigma signal": r"^signal = \{ relative = 0.05(, min = 0.0)? \}  # TODO: guessed: a "
        r"placeholder sigma \(5% of the value\); check",
        "sigma noise": r"^noise  = \{ relative = 0.05(, min = 0.0)? \}  # TODO: guessed: a "
        r"placeholder sigma \(5% of the value\); check",
    }
    for what, pattern in guesses.items():
        assert [line for line in lines if re.search(pattern, line)], what
    assert len(lines) == len(guesses)
    # the model reads `noise` where it wants `signal`: the spec and stderr say so
    wired = tomllib.loads(text)["data"]["nominal"]
    assert wired["tree"] == "Events"
    (chance,) = [line for line in text.splitlines() if "tagger at chance" in line]
    assert chance.startswith(
        "# TODO: the guessed feature order gives a tagger at chance (its AUC is not "
        "significantly above 0.5 and its decision is not significantly better than one that "
        "ignores the inputs): AUC "
    )
    assert chance.endswith("; check the order of the inputs and of their features")
    figure = re.search(r"AUC (0\.\d{3}) ± 0\.\d{3} on 2,000 events", chance)
    assert figure is not None
    expected = auc(events["y"], 1 / (1 + np.exp(-2 * (events["noise"] - 5))))
    assert float(figure.group(1)) == pytest.approx(expected, abs=5e-4)
    assert err.startswith("robustcheck init: warning: the guessed feature order gives a tagger")
    assert f"check the order of the inputs and features in {target.name}" in err
    assert "wrote" in out and "gives AUC" not in out
    load_spec(target)  # the spec is valid: only its wiring is wrong
    # and `robustcheck run` fails on the same sanity gates that init warned about
    assert main(["run", str(target)]) == 2
    assert "auc: the nominal AUC is" in capsys.readouterr().err


def test_the_right_order_reports_its_auc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_script(SecondFeature(), tmp_path / "tagger.pt")
    events = columns()
    np.savez(tmp_path / "jets.npz", noise=events["noise"], signal=events["signal"], y=events["y"])
    target = tmp_path / "jets.robust.toml"
    out, err = init(
        capsys, str(model), str(tmp_path / "jets.npz"), "-o", str(target), "--labels", "y"
    )
    text = target.read_text()
    expected = auc(events["y"], events["signal"])  # the model's score is monotonic in it
    line = f"the guessed feature order gives AUC {expected:.3f} ± 0.00"
    assert f"\n# {line}" in text
    assert "on 2,000 events (" in text
    assert f"robustcheck init: {line}" in out and err == ""
    assert "tagger at chance" not in text
    assert 'labels = "y"\n' in text  # given, not guessed: no TODO
    assert len(todo_lines(text)) == 6  # input, order, scores, signal_class and two sigmas


def test_a_reversed_discriminant_points_at_signal_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_script(SecondFeature(), tmp_path / "tagger.pt")
    events = columns(reverse=True)
    np.savez(tmp_path / "jets.npz", noise=events["noise"], signal=events["signal"], y=events["y"])
    target = tmp_path / "jets.robust.toml"
    _, err = init(capsys, str(model), str(tmp_path / "jets.npz"), "-o", str(target))
    text = target.read_text()
    assert "# TODO: the guessed feature order ranks background above signal: AUC 0.0" in text
    assert "check signal_class (and the labels)" in text
    assert "ranks background above signal" in err and "check signal_class" in err


def test_a_padding_mask_is_guessed_and_the_model_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_script(MaskedSum(), tmp_path / "pfn.pt")
    rng = np.random.default_rng(2)
    n, entries = 1000, 8
    y = rng.integers(0, 2, n)
    counts = rng.integers(3, entries + 1, n)
    mask = (np.arange(entries)[None, :] < counts[:, None]).astype(np.float32)
    pt = rng.exponential(3.0 + 3.0 * y[:, None], (n, entries))
    eta = rng.normal(0.0, 1.0, (n, entries))
    parts = (np.stack([pt, eta], axis=-1) * mask[..., None]).astype(np.float32)
    np.savez(tmp_path / "particles.npz", parts=parts, mask=mask, y=y)
    target = tmp_path / "pfn.robust.toml"
    out, _ = init(capsys, str(model), str(tmp_path / "particles.npz"), "-o", str(target))
    text = target.read_text()
    assert (
        'mask = "mask"  # TODO: guessed: `mask` (values 0 and 1, one per entry of `parts`) '
        "marks the real entries of `parts`; check"
    ) in text
    assert "[inputs.mask]\nperturb = false  # TODO: guessed: a padding mask" in text
    assert "[envelope.mask]" not in text
    spec = load_spec(target)
    assert spec.inputs["parts"].mask == "mask" and not spec.inputs["mask"].perturb
    scores = (pt * mask).sum(1)
    line = f"this wiring gives AUC {auc(y, scores):.3f} ± 0.0"
    assert f"# {line}" in text and line in out
    assert "on 1,000 events (" in out


def test_a_model_that_cannot_run_the_guessed_wiring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_script(SecondFeature(), tmp_path / "tagger.pt")
    np.savez(tmp_path / "one.npz", signal=columns()["signal"], y=columns()["y"])
    target = tmp_path / "one.robust.toml"
    _, err = init(capsys, str(model), str(tmp_path / "one.npz"), "-o", str(target))
    text = target.read_text()
    assert "# TODO: the model could not be evaluated with this wiring (" in text
    assert "index 1 out of range" in err  # the model's own words
    load_spec(target)


def test_init_writes_only_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "d.npz", **columns(50))
    model = save_script(SecondFeature(), tmp_path / "tagger.pt")
    assert (
        main(["init", str(model), str(tmp_path / "d.npz"), "-o", str(tmp_path / "robustness.yaml")])
        == 2
    )
    err = capsys.readouterr().err
    assert "robustness.yaml: robustcheck init writes TOML" in err
    assert not (tmp_path / "robustness.yaml").exists()
