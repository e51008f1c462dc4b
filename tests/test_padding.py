"""``[inputs.NAME] trim_padding``: batches sorted by multiplicity and cut to their longest jet,
only for a model whose scores do not depend on the padding length (verified on the nominal
sample), and said in every verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.core import SpecRun
from robustcheck.errors import ModelError, SpecError
from robustcheck.padding import PaddingTrim, paste
from tests.conftest import write_spec

SLOTS = 24

MODELS = '''
import torch


class EFN(torch.nn.Module):
    """Energy-flow-like: pT-weighted sum of a map of the angles; blind to padding."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = parts[..., 0] * mask
        z = z / (z.sum(1, keepdim=True) + 1e-6)
        s = self.scale * (z * torch.tanh(2 * parts[..., 1] + parts[..., 2])).sum(1)
        return torch.stack([-s, s], dim=1)


class SlotMean(EFN):
    """Averages over every slot, padding included: depends on the number of slots."""

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.scale * (mask * torch.tanh(2 * parts[..., 1] + parts[..., 2])).mean(1)
        return torch.stack([-s, s], dim=1)


def efn():
    return EFN()


def slot_mean():
    return SlotMean()


class NaNOnPadding(EFN):
    """NaN for every jet with padding (a log of zero), as a bad export gives."""

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(parts, mask) + torch.log(mask.min(1, keepdim=True).values) * 0


def nan_on_padding():
    return NaNOnPadding()
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Jets of 3 to 20 real particles in 24 slots; the mask is 1.0 on real ones."""
    rng = np.random.default_rng(4)
    n = 300
    mult = rng.integers(3, 21, n)
    real = np.arange(SLOTS)[None, :] < mult[:, None]
    pt = rng.exponential(10.0, (n, SLOTS)) + 1.0
    eta, phi = rng.normal(0, 0.3, (n, SLOTS)), rng.normal(0, 0.3, (n, SLOTS))
    parts = (np.stack([pt, eta, phi], -1) * real[..., None]).astype(np.float32)
    label = (parts[..., 1].sum(1) > 0).astype(np.int64)
    np.savez(tmp_path / "jets.npz", parts=parts, mask=real.astype(np.float32), y=label)
    (tmp_path / "padmodels.py").write_text(MODELS)
    return tmp_path


def spec(model: str, trim: bool | None = True, **pgd: Any) -> dict[str, Any]:
    parts: dict[str, Any] = {"features": ["pt", "eta", "phi"], "mask": "mask"}
    if trim is not None:
        parts["trim_padding"] = trim
    return {
        "version": 1,
        "model": {"path": f"padmodels:{model}", "skip_gates": ["auc", "accuracy"]},
        "data": {
            "nominal": {
                "path": "jets.npz",
                "labels": "y",
                "inputs": {"parts": "parts", "mask": "mask"},
            }
        },
        "inputs": {"parts": parts},
        "envelope": {
            "parts": {
                "pt": {"relative": 0.1, "min": 0.0},
                "eta": {"absolute": 0.1},
                "phi": {"absolute": 0.1},
            }
        },
        "attacks": {"pgd": {"method": "pgd", "epsilon": 2.0, "steps": 10, "seed": 3, **pgd}},
        "checks": [{"type": "fooling_rate", "attack": "pgd", "max": 0.5}],
    }


def test_cut_drops_slots_that_are_padding_everywhere_and_paste_restores_the_width() -> None:
    mask = torch.zeros(3, 8)
    mask[0, :2] = 1
    mask[1, [0, 4]] = 1  # not left-aligned: the last real slot counts, not the number
    parts = torch.arange(3 * 8 * 2, dtype=torch.float32).reshape(3, 8, 2)
    trim = PaddingTrim.of([("parts", "mask")])
    assert trim is not None
    assert trim.slots_needed({"mask": mask}).tolist() == [2, 5, 0]
    assert trim.order({"mask": mask}, torch.tensor([0, 1, 2])).tolist() == [2, 0, 1]
    cut = trim.cut({"parts": parts, "mask": mask, "other": torch.ones(3, 8)})
    assert cut["parts"].shape == (3, 5, 2) and cut["mask"].shape == (3, 5)
    assert cut["other"].shape == (3, 8)  # not masked by `mask`: untouched
    assert trim.cut({"parts": parts[2:], "mask": mask[2:]})["mask"].shape == (1, 1)
    target = torch.zeros(3, 8, 2)
    paste(target, torch.tensor([1, 2]), cut["parts"][:2] + 1)
    torch.testing.assert_close(target[1:, :5], cut["parts"][:2] + 1)
    assert float(target[1:, 5:].abs().sum()) == 0.0 and float(target[0].abs().sum()) == 0.0


def test_trimmed_run_fools_the_same_events_and_says_so(folder: Path) -> None:
    """Without a random start each event's PGD path does not depend on its batch, so sorting
    and trimming change nothing but the cost."""
    runs = {
        trim: SpecRun.from_path(
            write_spec(folder, spec("efn", trim, random_start=False), f"{trim}.robust.toml")
        )
        for trim in (False, True)
    }
    results = {trim: run.run()[0] for trim, run in runs.items()}
    fooled = {trim: run.adversaries("pgd").fooled for trim, run in runs.items()}
    assert int(fooled[False].sum()) > 0
    assert torch.equal(fooled[False], fooled[True])
    adv = {t: runs[t].adversaries("pgd").adversarial["parts"] for t in (False, True)}
    torch.testing.assert_close(adv[True], adv[False], atol=1e-5, rtol=1e-5)
    nominal = runs[True].inputs()[0]
    padding = nominal["mask"] == 0
    assert torch.equal(adv[True][padding], nominal["parts"][padding])  # padding never moves
    assert "trim_padding" in results[True].attack
    assert any("padding trimmed per batch" in d for d in results[True].details)
    assert "trim_padding" not in results[False].attack
    assert not any("padding trimmed" in d for d in results[False].details)
    torch.testing.assert_close(runs[True].log_probs(), runs[False].log_probs())


def test_a_model_that_depends_on_the_padding_length_is_refused(folder: Path) -> None:
    run = SpecRun.from_path(write_spec(folder, spec("slot_mean")))
    with pytest.raises(ModelError) as info:
        run.run()
    text = str(info.value)
    assert "inputs.parts.trim_padding" in text and "padding slots" in text
    # without the key the same model runs
    assert SpecRun.from_path(write_spec(folder, spec("slot_mean", None), "plain.toml")).run()


def test_non_finite_scores_are_named_as_such(folder: Path) -> None:
    with pytest.raises(
        ModelError,
        match="non-finite scores .* inputs.parts.trim_padding|"
        "inputs.parts.trim_padding.*non-finite scores",
    ) as info:
        SpecRun.from_path(write_spec(folder, spec("nan_on_padding"))).run()
    assert "depend on the number of padding slots" not in str(info.value)


def test_trim_padding_needs_a_mask(folder: Path) -> None:
    doc = spec("efn")
    del doc["inputs"]["parts"]["mask"]
    with pytest.raises(SpecError, match="inputs.parts.trim_padding"):
        SpecRun.from_path(write_spec(folder, doc))


def test_trimmed_batches_stay_within_windows_so_ranges_of_whole_windows_agree(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events are sorted by multiplicity only within windows of TRIM_WINDOW events of the
    sample, so a run over ranges of whole windows (what Dask sends its workers) forms the same
    trimmed batches as one range and gives bit-identical figures, random starts included."""
    from robustcheck import engine
    from robustcheck.stream import Chunk

    monkeypatch.setattr(engine, "TRIM_WINDOW", 64)
    path = write_spec(folder, spec("efn", True, batch_size=16))
    whole, ranged = SpecRun.from_path(path), SpecRun.from_path(path)
    inputs, labels = ranged.inputs("nominal")

    def ranges(name: str) -> Any:
        for start in range(0, len(labels), 128):
            stop = start + 128
            yield Chunk(start, {k: v[start:stop] for k, v in inputs.items()}, labels[start:stop])

    monkeypatch.setattr(ranged, "_chunks", ranges)
    ours, theirs = whole.adversaries("pgd"), ranged.adversaries("pgd")
    assert int(ours.fooled.sum()) > 0
    assert torch.equal(ours.fooled, theirs.fooled)
    assert torch.equal(ours.log_probs, theirs.log_probs)
    assert torch.equal(ours.adversarial["parts"], theirs.adversarial["parts"])
    windows = engine.trimmed_batches(
        PaddingTrim.of([("parts", "mask")]), inputs, torch.arange(len(labels)), 0, 16
    )
    assert all(
        len(torch.unique(torch.div(rows, 64, rounding_mode="floor"))) == 1 for rows in windows
    )


def test_an_out_of_memory_split_of_a_trimmed_batch_changes_nothing(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Halves of a trimmed batch that "ran out of memory" keep the whole batch's width, so
    every event's arithmetic, and the figures, are those of the unsplit run."""
    from robustcheck.attacks.pgd import PGD

    path = write_spec(folder, spec("efn", True, batch_size=64))
    perturb = PGD.perturb
    widths: dict[str, dict[int, int]] = {"whole": {}, "split": {}}  # event -> its batch's width
    run = "whole"

    def tight(self: PGD, batch: Any) -> dict[str, torch.Tensor]:
        if run == "split" and len(batch.target) > 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        first = batch.random.events.tolist()
        widths[run].update(dict.fromkeys(first, batch.nominal["parts"].shape[1]))
        return perturb(self, batch)

    monkeypatch.setattr(PGD, "perturb", tight)
    reference = SpecRun.from_path(path).adversaries("pgd")
    run = "split"
    with pytest.warns(RuntimeWarning, match="retried in halves"):
        split = SpecRun.from_path(path).adversaries("pgd")
    assert int(reference.fooled.sum()) > 0
    assert torch.equal(split.fooled, reference.fooled)
    assert torch.equal(split.log_probs, reference.log_probs)
    assert torch.equal(split.adversarial["parts"], reference.adversarial["parts"])
    assert widths["split"] == widths["whole"]  # each half ran at its batch's width
    assert len(set(widths["whole"].values())) > 1
