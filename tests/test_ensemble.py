"""The ensemble attack (per-event worst case, as AutoAttack) and AutoAttack's sanity warnings:
gradient-free attacks that beat the gradient attack, vanishing gradients, randomised scores."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcheck.attacks.ensemble import Ensemble
from robustcheck.core import SpecRun
from robustcheck.errors import SpecError
from robustcheck.spec import parse_spec
from tests import particle_fixtures
from tests.conftest import base_spec, make_events
from tests.particle_fixtures import make_particles, particle_spec

particle_dir = particle_fixtures.particle_dir

ROOT = Path(__file__).resolve().parents[1]
MASKING = "WARNING: possible gradient masking"

NOISY_SOURCE = '''
import torch


def build():
    torch.manual_seed(0)
    return Noisy()


class Noisy(torch.nn.Module):
    """A step in jet_eta, and scores that change from one evaluation to the next."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 4.0 * (x[:, 2] > 0).to(x.dtype) - 2.0 + 0.5 * torch.randn(len(x))
        logit = logit + 1e-3 * (x[:, 1] - 50.0)
        return torch.stack((torch.zeros_like(logit), logit), dim=1)


class Step(torch.nn.Module):
    """A step in jet_eta: the input gradient is zero everywhere (though defined)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 4.0 * (x[:, 2] > 0).to(x.dtype) - 2.0 + 0.0 * x[:, 1]
        return torch.stack((torch.zeros_like(logit), logit), dim=1)


def build_step():
    return Step()
'''


def make_run(folder: Path, attacks: dict[str, dict[str, Any]], model: str = "tagger.pt", **check):
    doc = base_spec(model=model)
    doc["attacks"] = attacks
    doc["checks"] = [{"type": "fooling_rate", "attack": next(iter(attacks)), "max": 0.05, **check}]
    if model.startswith("toys:"):
        doc["model"]["skip_gates"] = ["auc", "accuracy"]
    return SpecRun(parse_spec(doc, folder / "robustness.toml"), device="cpu")


def fooled(run: SpecRun, attack: str, **kwargs: Any) -> int:
    return int(run.adversaries(attack, **kwargs).fooled.sum())


MEMBERS = {
    "pgd5": {"method": "pgd", "epsilon": 1.0, "steps": 5, "seed": 2},
    "apgd5": {"method": "apgd", "epsilon": 1.0, "steps": 5, "loss": "ce"},
}


def test_ensemble_is_at_least_as_strong_as_each_member(model_dir: Path) -> None:
    attacks = {
        "ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["apgd5", "pgd5", "random"]},
        **MEMBERS,
        "random": {"method": "random", "epsilon": 1.0, "samples": 20},
    }
    run = make_run(model_dir, attacks)
    result = run.run_check(run.spec.checks[0])
    figures = result.figures
    k = figures["n_fooled"]
    for member in ("pgd5", "apgd5", "random"):
        assert k >= fooled(run, member)
    # the figures name which member fooled how many, and they add up
    parts = [figures[f"n_fooled_by_{m}"] for m in ("apgd5", "pgd5", "random")]
    assert sum(parts) == k and parts[0] == fooled(run, "apgd5")  # the first runs as alone
    line = next(d for d in result.details if d.startswith("ensemble members"))
    assert f"apgd5 {parts[0]:,} of {int(run.adversaries('ens').correct.sum()):,}" in line
    # the masking check runs by default: random search (gradient-free) came after gradients
    assert any(
        d.startswith("gradient-masking check passed: the gradient-free") for d in result.details
    )
    assert "pgd5:" in result.attack and "apgd5:" in result.attack


def test_ensemble_never_attacks_an_event_already_fooled(model_dir: Path, monkeypatch) -> None:
    seen: list[tuple[set[tuple], set[tuple]]] = []  # per member call: its events, those fooled
    use_spec = Ensemble.use_spec

    def spying_use_spec(self, spec):
        use_spec(self, spec)
        for member in self.members:
            perturb = member.perturb

            def spy(batch, perturb=perturb):
                adv = perturb(batch)
                rows = [tuple(row) for row in batch.nominal["x"].tolist()]
                fools = batch.fooled(adv).tolist()
                seen.append((set(rows), {row for row, f in zip(rows, fools, strict=True) if f}))
                return adv

            member.perturb = spy

    monkeypatch.setattr(Ensemble, "use_spec", spying_use_spec)
    attacks = {"ens": {"method": "ensemble", "epsilon": 1.0, "attacks": [*MEMBERS, "spsa"]}}
    run = make_run(model_dir, {**attacks, **MEMBERS})
    adv = run.adversaries("ens")
    assert len(seen) == 3
    fooled_before: set[tuple] = set()
    for events, fools in seen:
        assert not events & fooled_before
        fooled_before |= fools
    assert len(fooled_before) == int(adv.fooled.sum()) > 0
    assert len(seen[0][0]) == int(adv.correct.sum())  # the first member attacks every event


def test_without_early_stopping_each_event_keeps_its_worst_point(model_dir: Path) -> None:
    attacks = {"ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["apgd5", "pgd5"]}}
    run = make_run(model_dir, {**attacks, **MEMBERS})
    full = run.adversaries("ens", full=True)
    alone = run.adversaries("apgd5", full=True)
    assert bool((full.fooled | ~alone.fooled).all())  # never less than its deterministic member
    assert "each run on every event" in full.notes[0]


def test_every_check_on_an_ensemble_names_its_members(model_dir: Path) -> None:
    doc = base_spec()
    doc["attacks"] = {
        "ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["apgd5", "pgd5"]},
        **MEMBERS,
    }
    doc["checks"] = [
        {"type": "invariance", "attack": "ens", "ks_min_pvalue": 1e-12},
        {"type": "auc_under_attack", "attack": "ens", "max_auc_drop": 1.0},
    ]
    run = SpecRun(parse_spec(doc, model_dir / "robustness.toml"), device="cpu")
    for check in run.spec.checks:
        result = run.run_check(check)
        assert any(d.startswith("ensemble members") for d in result.details), check.type


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("toys")
    np.savez(folder / "data.npz", **make_events(400, seed=8))
    (folder / "toys.py").write_text(NOISY_SOURCE)
    return folder


@pytest.mark.filterwarnings("ignore:WARNING")
def test_zero_gradients_and_a_gradient_free_member_that_wins_are_flagged(toys: Path) -> None:
    attacks = {"ens": {"method": "ensemble", "epsilon": 3.0, "attacks": ["apgd_margin", "random"]}}
    run = make_run(toys, attacks, model="toys:build_step")
    with pytest.warns(UserWarning, match="possible gradient masking"):
        result = run.run_check(run.spec.checks[0])
    assert result.figures["n_fooled_by_apgd_margin"] == 0 < result.figures["n_fooled_by_random"]
    assert any(
        d.startswith(f"{MASKING}: the gradient-free members (random)") for d in result.details
    )
    assert any("input gradients are zero for" in d for d in result.details)


@pytest.mark.filterwarnings("ignore:WARNING")
def test_randomised_scores_are_flagged(toys: Path) -> None:
    run = make_run(
        toys,
        {"pgd": {"method": "pgd", "epsilon": 1.0, "steps": 3, "seed": 1}},
        model="toys:build",
        gradient_masking_check=True,
    )
    with pytest.warns(UserWarning, match="scores look randomised"):
        result = run.run_check(run.spec.checks[0])
    assert any(d.startswith("WARNING: the model's scores look randomised") for d in result.details)


def test_a_smooth_model_passes_the_sanity_checks_quietly(model_dir: Path) -> None:
    run = make_run(
        model_dir,
        {"apgd": {"method": "apgd", "epsilon": 1.0, "steps": 10}},
        gradient_masking_check=True,
        gradient_masking_attacks=["random", "spsa"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run.run_check(run.spec.checks[0])
    assert not any(d.startswith("WARNING") for d in result.details)
    assert result.figures["n_fooled"] >= result.figures["n_fooled_spsa"]
    assert "n_fooled_random" in result.figures
    assert any(d.startswith("input gradients are nonzero for") for d in result.details)


# --- issue 17: a gradient-free attack beats PGD on an EdgeConv (ParticleNet-like) tagger ------


@pytest.fixture(scope="module")
def edgeconv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained EdgeConv tagger (kNN by topk) on padded particle jets."""
    folder = tmp_path_factory.mktemp("edgeconv")
    shutil.copy(ROOT / "examples" / "qg_jets" / "architectures.py", folder / "architectures.py")
    spec = importlib.util.spec_from_file_location(
        "_edge_architectures", folder / "architectures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    events = make_particles(400, seed=11)
    np.savez(folder / "particles.npz", **events)
    model = module.build("edgeconv", width=16, k=4)
    parts, mask = torch.from_numpy(events["parts"]), torch.from_numpy(events["mask"])
    labels = torch.from_numpy(events["y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(parts, mask), labels).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "edge_state.pt")
    (folder / "edge.py").write_text(
        "import architectures\n\n\ndef build():\n"
        "    return architectures.build('edgeconv', width=16, k=4)\n"
    )
    return folder


def edge_doc(attacks: dict[str, dict[str, Any]], **check: Any) -> dict[str, Any]:
    doc = particle_spec("edge:build", attacks=attacks)
    doc["model"]["weights"] = "edge_state.pt"
    doc["checks"][0].update(check)
    return doc


EDGE_ATTACKS = {
    "pgd": {"method": "pgd", "epsilon": 1.0, "steps": 6, "seed": 1},
    "apgd": {"method": "apgd", "epsilon": 1.0, "steps": 6},
    # what the masking check of pgd runs as its spsa probe: the same epsilon, steps and seed
    "spsa": {"method": "spsa", "epsilon": 1.0, "steps": 6, "seed": 1},
}


def test_edgeconv_masking_is_named_and_the_ensemble_closes_the_gap(edgeconv_dir: Path) -> None:
    attacks = {"ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["apgd", "spsa"]}}
    doc = edge_doc(
        {**EDGE_ATTACKS, **attacks}, gradient_masking_check=True, gradient_masking_attacks=["spsa"]
    )
    doc["checks"].append({"name": "ensemble", "type": "fooling_rate", "attack": "ens", "max": 0.5})
    run = SpecRun(parse_spec(doc, edgeconv_dir / "robustness.toml"), device="cpu")
    # PGD alone, checked against spsa: the verdict carries the masking warning
    with pytest.warns(UserWarning, match="possible gradient masking"):
        result = run.run_check(run.spec.checks[0])
    k_pgd, k_spsa = result.figures["n_fooled"], result.figures["n_fooled_spsa"]
    assert k_spsa > k_pgd
    assert any(d.startswith(f"{MASKING}: spsa with the same epsilon") for d in result.details)
    # the ensemble of apgd and spsa: the warning by default, and at least each member's count
    with pytest.warns(UserWarning, match="possible gradient masking"):
        result = run.run_check(run.spec.checks[1])
    assert result.figures["n_fooled"] >= max(k_pgd, k_spsa, fooled(run, "apgd"))
    assert any(d.startswith(f"{MASKING}: the gradient-free members (spsa)") for d in result.details)


# --- spec validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "extra", "message"),
    [
        ([], {}, r"an ensemble needs at least one member\n  fix: attacks = \["),
        (["apgd_cee"], {}, r"member 'apgd_cee' is neither .*\n  fix: did you mean `apgd_ce`\?"),
        (["ens"], {}, "an ensemble cannot contain itself"),
        (["pgd5", "pgd5"], {}, "member 'pgd5' is listed twice"),
        (
            ["wide"],
            {"wide": {"method": "pgd", "epsilon": 2.0}},
            r"epsilon 2, the ensemble 1.*\n"
            r"  fix: set epsilon = 1 in \[attacks.wide\]",
        ),
        (["inner"], {"inner": {"method": "ensemble", "epsilon": 1.0}}, "has method 'ensemble'"),
        (
            ["hidden"],
            {"hidden": {"method": "constrained_pgd", "epsilon": 1.0}},
            r"method 'constrained_pgd'; an ensemble combines attacks in the same epsilon box\n"
            r"  fix: use members whose method is one of fgsm, pgd, spsa, apgd, random",
        ),
    ],
)
def test_members_are_validated(
    model_dir: Path, members: list[str], extra: dict[str, Any], message: str
) -> None:
    doc = base_spec()
    doc["attacks"] = {"ens": {"method": "ensemble", "epsilon": 1.0, "attacks": members}, **MEMBERS}
    doc["attacks"].update(extra)
    doc["checks"][0]["attack"] = "ens"
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(doc, model_dir / "robustness.toml")
    assert info.value.field == "attacks.ens.attacks"


def test_a_broken_member_table_is_reported_once(model_dir: Path) -> None:
    doc = base_spec()
    doc["attacks"] = {
        "ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["bad"]},
        "bad": {"method": "pgd", "epsilon": 1.0, "stepz": 3},
    }
    doc["checks"][0]["attack"] = "ens"
    with pytest.raises(SpecError) as info:
        parse_spec(doc, model_dir / "robustness.toml")
    assert "unknown key `stepz`" in str(info.value)
    assert "attacks.ens" not in str(info.value)


def test_masking_attacks_are_validated(model_dir: Path) -> None:
    doc = base_spec()
    doc["checks"][0]["gradient_masking_attacks"] = ["square"]
    with pytest.raises(SpecError, match=r"'square' is not one of 'random', 'spsa'"):
        parse_spec(doc, model_dir / "robustness.toml")


def test_a_streamed_sample_gives_the_same_ensemble_and_probes(particle_dir: Path) -> None:
    """Chunks and a kept sample: the same fooled events, and the probes on the kept events."""
    attacks = {"ens": {"method": "ensemble", "epsilon": 1.0, "attacks": ["apgd_ce", "apgd_margin"]}}

    def run(**data: int) -> SpecRun:
        doc = particle_spec("pfn:build", attacks=attacks)
        doc["data"]["nominal"].update(data)
        doc["checks"][0]["gradient_masking_check"] = True
        return SpecRun(parse_spec(doc, particle_dir / "robustness.toml"), device="cpu")

    whole, streamed = run(), run(chunk_size=130, keep_events=200)
    results = [r.run_check(r.spec.checks[0]) for r in (whole, streamed)]
    assert results[0].figures["n_fooled"] == results[1].figures["n_fooled"] > 0
    assert torch.equal(whole.adversaries("ens").fooled, streamed.adversaries("ens").fooled)
    assert any(d.startswith("input gradients are nonzero for") for d in results[1].details)
