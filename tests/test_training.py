"""Adversarial training batches: inside the envelope, model untouched, and they help."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.spec import parse_spec
from robustcheck.training import adversarial_batch, make_envelope


class ParticleNet(torch.nn.Module):
    """A tiny deep set with dropout, so train/eval modes matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.phi = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh())
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latent = (self.phi(parts) * mask.unsqueeze(-1)).sum(1)
        return self.head(self.drop(latent))


PARTICLE_ENVELOPE = {
    "parts": {
        "pt": {"relative": 0.05, "min": 0.0},
        "eta": {"absolute": 0.01, "min": -0.4, "max": 0.4},
        "pid": {"frozen": True},
    }
}


def particles(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pt = torch.rand(n, 10, 1, generator=g) * 50
    eta = (torch.rand(n, 10, 1, generator=g) - 0.5) * 0.8
    eta[:, 0] = 0.4  # on the upper bound
    pid = torch.randint(0, 3, (n, 10, 1), generator=g).float()
    mask = (torch.rand(n, 10, generator=g) < 0.7).float()
    parts = torch.cat([pt, eta, pid], dim=-1) * mask.unsqueeze(-1)
    return {"parts": parts, "mask": mask}


def test_fgsm_step_is_the_signed_gradient_of_a_linear_model() -> None:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [-1.0, 0.5]]))
        model.bias.zero_()
    envelope = make_envelope({"x": {"a": {"absolute": 0.1}, "b": {"relative": 0.2, "max": 1.0}}})
    x = torch.tensor([[0.5, 0.9], [-1.0, 2.0], [0.3, -0.4]])
    y = torch.tensor([0, 1, 1])
    adv = adversarial_batch(model, x, y, envelope, epsilon=2.0, method="fgsm")
    # d(-log p_y)/dx = -(1 - p_y) (w_y - w_other): its sign is sign(w_other - w_y)
    w = model.weight.detach()
    direction = torch.sign(w[1 - y] - w[y])
    sigma = torch.stack([torch.full((3,), 0.1), 0.2 * x[:, 1].abs()], dim=1)
    expected = x + 2.0 * sigma * direction
    expected[:, 1] = torch.minimum(expected[:, 1], torch.maximum(torch.tensor(1.0), x[:, 1]))
    torch.testing.assert_close(adv, expected)
    # early_stop leaves events the model already gets wrong at their nominal values
    wrong = model(x).argmax(1) != y
    assert wrong.any() and not wrong.all()
    stopped = adversarial_batch(model, x, y, envelope, 2.0, early_stop=True)
    torch.testing.assert_close(stopped[wrong], x[wrong])
    torch.testing.assert_close(stopped[~wrong], expected[~wrong])


@pytest.mark.parametrize("method", ["fgsm", "pgd", "constrained_pgd"])
def test_batches_stay_in_the_envelope(method: str) -> None:
    model = ParticleNet()
    inputs = particles()
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1))
    envelope = make_envelope(PARTICLE_ENVELOPE, masks={"parts": "mask"})
    options = {} if method == "fgsm" else {"steps": 5}
    adv = adversarial_batch(model, inputs, labels, envelope, 1.5, method, seed=3, **options)
    assert set(adv) == {"parts", "mask"} and adv["mask"] is inputs["mask"]
    x, moved = inputs["parts"], adv["parts"]
    real = inputs["mask"].bool()
    sigma = torch.stack([0.05 * x[..., 0], torch.full_like(x[..., 1], 0.01)], dim=-1)
    shift = (moved - x)[..., :2]
    assert bool((shift.abs() <= 1.5 * sigma * (1 + 1e-5) + 1e-7).all())
    assert torch.equal(moved[~real], x[~real])  # padding never moves
    assert torch.equal(moved[..., 2], x[..., 2])  # frozen pid
    assert bool((moved[..., 0] >= 0).all())
    assert bool((moved[..., 1] <= 0.4 + 1e-7).all() and (moved[..., 1] >= -0.4 - 1e-7).all())
    assert bool((shift[real].abs() > 0).any())


def test_model_state_is_untouched() -> None:
    model = ParticleNet().train()
    model.head.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    envelope = make_envelope(PARTICLE_ENVELOPE, masks={"parts": "mask"})
    inputs = particles()
    labels = torch.zeros(64, dtype=torch.long)
    first = adversarial_batch(model, inputs, labels, envelope, 1.0, "pgd", steps=3, seed=5)
    again = adversarial_batch(model, inputs, labels, envelope, 1.0, "pgd", steps=3, seed=5)
    assert torch.equal(first["parts"], again["parts"])  # eval mode inside: dropout is off
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_user_mistakes_are_spec_errors() -> None:
    model = torch.nn.Linear(2, 2)
    envelope = make_envelope({"x": {"a": {"absolute": 0.1}, "b": {"frozen": True}}})
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(SpecError, match="(?s)method 'spsa'.*fix: use one of: fgsm, pgd"):
        adversarial_batch(model, x, y, envelope, 1.0, method="spsa")
    with pytest.raises(SpecError, match="did you mean `steps`"):
        adversarial_batch(model, x, y, envelope, 1.0, method="pgd", step=3)
    with pytest.raises(SpecError, match="envelope.x.a.*no uncertainty"):
        make_envelope({"x": {"a": {"min": 0.0}}})
    with pytest.raises(SpecError, match="unknown key `relativ`"):
        make_envelope({"x": {"a": {"relativ": 0.1}}})
    two = make_envelope({"x": {"a": {"absolute": 0.1}}, "z": {"b": {"absolute": 0.1}}})
    with pytest.raises(SpecError, match="one tensor given"):
        adversarial_batch(model, x, y, two, 1.0)
    masked = make_envelope(PARTICLE_ENVELOPE, masks={"parts": "mask"})
    with pytest.raises(SpecError, match=r"\['mask'\] are in the envelope"):
        adversarial_batch(ParticleNet(), particles()["parts"], y, masked, 1.0)
    with pytest.raises(SpecError, match="masks name inputs without an envelope"):
        make_envelope(PARTICLE_ENVELOPE, masks={"jets": "mask"})


def toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature a: separating but fragile (sigma 0.7); feature b: separating and frozen."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = 2 * y - 1
    x = np.stack([rng.normal(1.0 * sign, 1.0), rng.normal(0.8 * sign, 1.0)], axis=1)
    return x.astype(np.float32), y


def train(x: np.ndarray, y: np.ndarray, adversarial: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    envelope = make_envelope({"x": {"a": {"absolute": 0.7}, "b": {"frozen": True}}})
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(150):
        loss = F.cross_entropy(model(inputs), labels)
        if adversarial:
            adv = adversarial_batch(model, inputs, labels, envelope, 1.0, "fgsm", seed=step)
            loss = 0.5 * loss + 0.5 * F.cross_entropy(model(adv), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_adversarial_training_lowers_the_fooling_rate(tmp_path: Path) -> None:
    x, y = toy(2000, seed=1)
    x_test, y_test = toy(3000, seed=2)
    np.savez(tmp_path / "data.npz", x=x_test, y=y_test)
    results = {}
    for adversarial in (False, True):
        name = f"model_{int(adversarial)}.pt"
        model = train(x, y, adversarial)
        torch.jit.save(torch.jit.trace(model, torch.from_numpy(x[:4])), str(tmp_path / name))
        doc = {
            "version": 1,
            "model": {"path": name},
            "data": {"nominal": {"path": "data.npz", "labels": "y", "inputs": {"x": "x"}}},
            "inputs": {"x": {"features": ["a", "b"]}},
            "envelope": {"x": {"a": {"absolute": 0.7}, "b": {"frozen": True}}},
            "attacks": {"pgd": {"method": "pgd", "epsilon": 1.0, "steps": 10, "seed": 1}},
            "checks": [{"type": "fooling_rate", "attack": "pgd", "max": 1.0}],
        }
        run = SpecRun(parse_spec(doc, tmp_path / f"{name}.robust.toml"), device="cpu")
        fooling = run.run_check(run.spec.checks[0]).figures
        with torch.no_grad():
            accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
        results[adversarial] = (fooling, accuracy)
    nominal, robust = results[False][0], results[True][0]
    assert robust["ci_high"] < nominal["ci_low"]  # lower at equal epsilon, beyond the noise
    assert results[True][1] > results[False][1] - 0.03  # at little cost in accuracy
