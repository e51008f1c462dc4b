"""The attack engine: stays in the envelope, is seeded, and leaves the model alone."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcheck.attacks.base import AttackBatch
from robustcheck.core import SpecRun
from robustcheck.spec import parse_spec
from tests.conftest import base_spec, make_events

METHODS = [
    ("pgd", {"steps": 10}),
    ("pgd", {"steps": 5, "random_start": False}),
    ("fgsm", {}),
    ("constrained_pgd", {"steps": 10, "lambda_chi2": 0.01}),
]


def make_run(model_dir: Path, epsilon: float = 1.0, method: str = "pgd", **options) -> SpecRun:
    doc = base_spec(epsilon=epsilon)
    doc["attacks"]["pgd"] = {"method": method, "epsilon": epsilon, "seed": 7, **options}
    return SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_adversaries_stay_in_box_and_bounds(model_dir: Path, method: str, options) -> None:
    epsilon = 2.0
    run = make_run(model_dir, epsilon, method, **options)
    adv = run.adversaries("pgd")
    x, x_adv = adv.nominal["x"], adv.adversarial["x"]
    sigma = run.envelope.inputs["x"].sigma(x)
    moved = (x_adv - x).abs()
    assert bool((moved <= epsilon * sigma * (1 + 1e-5) + 1e-6).all())
    assert bool((x_adv[:, 1] >= 0).all())
    assert bool((x_adv[:, 2].abs() <= 2.5).all())
    # the frozen multiplicity never moves, bit for bit
    assert torch.equal(x_adv[:, 3], x[:, 3])
    # something did move, or the checks above prove nothing
    assert float(moved[:, :3].max()) > 0
    # events already misclassified at nominal are not attacked
    assert torch.equal(x_adv[~adv.correct], x[~adv.correct])


def test_fooling_rate_is_zero_at_zero_epsilon_and_grows(model_dir: Path) -> None:
    rates = []
    for epsilon in (0.0, 0.5, 1.0, 2.0, 4.0):
        adv = make_run(model_dir, epsilon).adversaries("pgd")
        rates.append(float(adv.fooled.sum()) / float(adv.correct.sum()))
    assert rates[0] == 0.0
    assert all(a <= b for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[-1] > rates[1] > 0


def test_same_seed_same_adversaries_other_seed_differs(model_dir: Path) -> None:
    first = make_run(model_dir).adversaries("pgd").adversarial["x"]
    again = make_run(model_dir).adversaries("pgd").adversarial["x"]
    assert torch.equal(first, again)
    run = make_run(model_dir)
    run.seed_override = 8
    other = run.adversaries("pgd").adversarial["x"]
    assert not torch.equal(first, other)


def test_fgsm_is_one_full_pgd_step(model_dir: Path) -> None:
    fgsm = make_run(model_dir, 1.0, "fgsm").adversaries("pgd")
    one_step = make_run(model_dir, 1.0, "pgd", steps=1, step_size=1.0, random_start=False)
    pgd = one_step.adversaries("pgd")
    assert torch.equal(fgsm.adversarial["x"], pgd.adversarial["x"])
    assert int(fgsm.fooled.sum()) > 0


def test_attack_is_cached_per_spec_run(model_dir: Path) -> None:
    run = make_run(model_dir)
    assert run.adversaries("pgd") is run.adversaries("pgd")


def test_user_model_is_left_unchanged(model_dir: Path, tmp_path: Path) -> None:
    """A factory returning the user's own module in training mode, with trainable weights."""
    source = (model_dir / "mlp.py").read_text() + (
        "\nMODEL = build()\nMODEL.train()\nMODEL[2].eval()\n\ndef shared():\n    return MODEL\n"
    )
    (tmp_path / "user_tagger.py").write_text(source)
    for name in ("data.npz",):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    doc = base_spec(model="user_tagger:shared")
    run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
    module = run.tagger.module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    modes = [m.training for m in module.modules()]
    data_bytes = (tmp_path / "data.npz").read_bytes()
    run.adversaries("pgd")
    assert [m.training for m in module.modules()] == modes
    assert modes[0] is True and modes[3] is False
    assert all(p.requires_grad for p in module.parameters())
    assert all(p.grad is None for p in module.parameters())
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert (tmp_path / "data.npz").read_bytes() == data_bytes


def test_in_memory_module_is_copied_not_moved(model_dir: Path) -> None:
    from robustcheck.taggers.torch_module import wrap_module

    module = torch.nn.Linear(4, 2)
    tagger = wrap_module(module, "memory")
    tagger.to(torch.device("meta"))
    assert module.weight.device.type == "cpu"
    assert tagger.module is not module


def test_decision_threshold_targets_and_loss() -> None:
    from robustcheck.decision import Decision

    log_probs = torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55]]))
    labels = torch.tensor([0, 1, 1])
    argmax = Decision()
    assert argmax.decide(log_probs).tolist() == [0, 1, 1]
    cut = Decision(threshold=0.6)
    assert cut.decide(log_probs).tolist() == [0, 1, 0]
    assert cut.target(labels).tolist() == [0, 1, 1]
    expected = -(np.log(0.9) + np.log(0.7) + np.log(0.55))
    assert float(cut.loss(log_probs, cut.target(labels))) == pytest.approx(expected, rel=1e-5)
    assert float(argmax.loss(log_probs, labels)) == pytest.approx(expected, rel=1e-5)


def test_out_of_memory_splits_the_batch_and_retries(model_dir: Path, monkeypatch) -> None:
    """A batch that does not fit is attacked in halves, with the same deterministic result."""
    from robustcheck.attacks.pgd import PGD

    reference = make_run(model_dir, 1.0, "pgd", steps=5, random_start=False, batch_size=128)
    expected = reference.adversaries("pgd").adversarial["x"]
    perturb = PGD.perturb
    sizes = []

    def small_device(self, batch):
        sizes.append(len(batch.target))
        if len(batch.target) > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return perturb(self, batch)

    monkeypatch.setattr(PGD, "perturb", small_device)
    run = make_run(model_dir, 1.0, "pgd", steps=5, random_start=False, batch_size=1000)
    with pytest.warns(RuntimeWarning, match="CUDA out of memory: batches are retried in halves"):
        adv = run.adversaries("pgd").adversarial["x"]
    assert torch.equal(adv, expected)
    assert max(sizes) == 1000 and 125 in sizes  # 1000 -> 500 -> 250 -> 125


def test_default_batch_size_follows_the_device(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a batch_size, a run attacks its events in batches of its device's default: on
    more events than that, ceil(N / size) batches, the same as the size given explicitly."""
    from robustcheck import core
    from robustcheck.attacks.pgd import PGD
    from robustcheck.engine import default_batch_size

    n = 9000
    shutil.copy(model_dir / "tagger.pt", tmp_path / "tagger.pt")
    np.savez(tmp_path / "data.npz", **make_events(n, seed=9))

    def attacked(**options: object) -> tuple[SpecRun, torch.Tensor]:
        doc = base_spec()
        doc["attacks"]["pgd"] = {"method": "pgd", "epsilon": 1.0, "steps": 3, "seed": 7, **options}
        run = SpecRun(parse_spec(doc, tmp_path / "robustness.toml"), device="cpu")
        return run, run.adversaries("pgd", full=True).adversarial["x"]  # full: every event

    sizes: list[int] = []
    perturb = PGD.perturb

    def counted(self: PGD, batch: AttackBatch) -> dict[str, torch.Tensor]:
        sizes.append(len(batch.target))
        return perturb(self, batch)

    monkeypatch.setattr(PGD, "perturb", counted)
    size = default_batch_size(torch.device("cpu"))
    assert size < n < 3 * size  # more than one batch, or the count proves nothing
    _, default = attacked()
    assert len(sizes) == math.ceil(n / size) == 3
    assert sizes == [size, size, n - 2 * size]
    # every event draws from its own random stream: one batch of every event gives the
    # same adversarial inputs, bit for bit
    sizes.clear()
    assert torch.equal(default, attacked(batch_size=size)[1]) and len(sizes) == 3
    sizes.clear()
    assert torch.equal(default, attacked(batch_size=n)[1]) and sizes == [n]
    # without a random start the split changes nothing
    _, split = attacked(random_start=False)
    assert torch.equal(split, attacked(random_start=False, batch_size=n)[1])
    # the run asks for the default of its tagger's device, and uses what it gets
    devices: list[torch.device] = []

    def recorded(device: torch.device) -> int:
        devices.append(device)
        return 2000

    monkeypatch.setattr(core, "default_batch_size", recorded)
    sizes.clear()
    run, _ = attacked()
    assert devices == [run.tagger.device] == [torch.device("cpu")]
    assert sizes == [2000] * 4 + [1000]
    # CUDA starts larger (and halves on out-of-memory, test above)
    assert default_batch_size(torch.device("cuda")) > size


def test_constrained_pgd_without_random_start_claims_no_seed(model_dir: Path) -> None:
    """Its default has no random start, so no random number is drawn and the seed changes
    nothing: neither the description nor the figures (junit properties) may claim one."""
    run = make_run(model_dir, 2.0, "constrained_pgd", steps=10)
    attack = run.make_attack("pgd")
    assert not attack.uses_seed
    description = attack.describe()
    assert description.endswith(", no random start") and "seed" not in description
    (result,) = run.run()
    assert result.attack == description and "seed" not in result.summary
    assert "seed" not in result.figures
    assert "seed" not in dict(result.properties())
    # the claim is true: another seed gives the same adversaries, bit for bit
    other = make_run(model_dir, 2.0, "constrained_pgd", steps=10)
    other.seed_override = 8
    assert torch.equal(
        run.adversaries("pgd").adversarial["x"], other.adversaries("pgd").adversarial["x"]
    )
    assert run.adversaries("pgd").attack_figures() == {}


@pytest.mark.parametrize(
    ("method", "options", "note"),
    [
        ("fgsm", {}, "(deterministic)"),
        ("pgd", {"random_start": False}, ", no random start"),
        ("pgd", {}, ", seed 7"),
    ],
)
def test_only_attacks_that_draw_random_numbers_claim_a_seed(
    model_dir: Path, method: str, options: dict, note: str
) -> None:
    run = make_run(model_dir, 1.0, method, **options)
    attack = run.make_attack("pgd")
    assert attack.describe().endswith(note)
    (result,) = run.run()
    assert ("seed" in result.figures) == attack.uses_seed == (note == ", seed 7")


def test_attacks_with_a_random_start_report_their_seed(model_dir: Path) -> None:
    for method, options in (("constrained_pgd", {"random_start": True}), ("pgd", {})):
        run = make_run(model_dir, 2.0, method, steps=10, **options)
        run.seed_override = 8
        attack = run.make_attack("pgd")
        assert attack.uses_seed
        assert attack.describe().endswith("random start, seed 8")
        (result,) = run.run()
        assert result.figures["seed"] == 8 == dict(result.properties())["seed"]
        assert "seed 8" in result.summary
        # and the seed matters
        first = run.adversaries("pgd").adversarial["x"]
        run = make_run(model_dir, 2.0, method, steps=10, **options)
        assert not torch.equal(first, run.adversaries("pgd").adversarial["x"])
