"""The quark/gluon example end to end on its committed sample, and PYTHIA generation if present.

Training, exports and the specs run on the 500 + 500 committed jets with a few epochs: the
``test-scale`` run of ``examples/qg_jets/quote.py``, whose tables the READMEs quote; one test
checks that every quoted table is the one this run prints. The generation test runs only where
pythia8mc and fastjet are installed (the `examples` extra): 60 jets take a few seconds of one
core, so it stays in the suite when it can.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from robustcheck.core import SpecRun
from robustcheck.invariance_stats import compare

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "qg_jets"


def example_module(name: str) -> ModuleType:
    """Import one of the example's scripts (registered, so its dataclasses work)."""
    qualified = f"qg_example_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return example_module("train")


@pytest.fixture(scope="module")
def quote() -> ModuleType:
    return example_module("quote")


@pytest.fixture(scope="module")
def built(train: ModuleType, quote: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example trained on the committed sample (few epochs), exported, specs written, the
    specs of dnn, dnn_adv and pfn run and their tables written to results.md: the READMEs'
    ``test-scale`` run (``quote.RUNS``)."""
    out = tmp_path_factory.mktemp("qg")
    settings = quote.RUNS["test-scale"]
    assert settings["check"] == ("dnn", "dnn_adv", "pfn") and settings["loss_events"] == 100
    train.run(EXAMPLE / "data", out, verbose=False, **settings)
    return out


def test_readmes_quote_what_the_code_prints(built: Path, quote: ModuleType) -> None:
    """Every table the READMEs quote from the test-scale run is, row for row, the one train.py
    printed for it, and every table it printed is quoted somewhere."""
    tables = quote.tables_of(built / "results.md")
    assert {"settings", "overview", "summary", "detectability", "loss_surfaces"} <= set(tables)
    assert all(len(lines) >= 3 for lines in tables.values())
    quoted: set[str] = set()
    stale: list[str] = []
    for readme in quote.READMES:
        found = [b.name for b in quote.blocks(readme.read_text(), readme) if b.run == "test-scale"]
        assert found, f"{readme} quotes no table from the test-scale run"
        quoted.update(found)
        stale += quote.stale_blocks(readme, "test-scale", tables)
    assert quoted == set(tables), f"tables printed but quoted nowhere: {set(tables) - quoted}"
    assert not stale, (
        "the READMEs quote figures the code no longer prints; refresh them with "
        "`cd examples/qg_jets && python quote.py` (or `--run test-scale`), and reread the text "
        "around them:\n" + "\n".join(stale)
    )


def test_committed_sample_is_small_and_well_formed() -> None:
    files = [EXAMPLE / "data" / f"{s}.npz" for s in ("nominal", "alternative")]
    assert sum(f.stat().st_size for f in files) < 2_000_000
    for path in files:
        with np.load(path) as data:
            label, mask, parts = data["label"], data["mask"], data["parts"]
            assert set(np.unique(label)) == {0, 1} and abs(label.mean() - 0.5) < 0.01
            assert np.all((data["jet_pt"] >= 500) & (data["jet_pt"] <= 550))
            assert np.all(np.abs(data["jet_y"]) < 1.7)
            np.testing.assert_array_equal(mask.sum(1), np.minimum(data["n_const"], mask.shape[1]))
            assert np.all(parts[mask == 0] == 0)
            # the constituents add up to the jet: pT along the axis, nothing across it
            pt, dphi = parts[..., 0], parts[..., 2]
            along = (pt * np.cos(dphi)).sum(1)
            np.testing.assert_allclose(along, data["jet_pt"], rtol=1e-4)
            np.testing.assert_allclose((pt * np.sin(dphi)).sum(1), 0.0, atol=1e-2)


def test_features_match_an_independent_computation(train: ModuleType) -> None:
    sample = train.load(EXAMPLE / "data" / "nominal.npz")
    features = train.features_of(sample)
    for jet in range(5):
        real = sample["mask"][jet] > 0
        pt, dy, dphi = (sample["parts"][jet, real, k].astype(np.float64) for k in range(3))
        r = np.hypot(dy, dphi)
        pid = np.abs(sample["parts"][jet, real, 3]).astype(int)
        masses = {
            22: 0.0,
            11: 0.000511,
            13: 0.105658,
            211: 0.13957,
            321: 0.493677,
            130: 0.497611,
            2212: 0.938272,
            2112: 0.939565,
        }
        mt = np.hypot(pt, [masses[p] for p in pid])
        p4 = np.stack([mt * np.cosh(dy), pt * np.cos(dphi), pt * np.sin(dphi), mt * np.sinh(dy)])
        e, px, py, pz = p4.sum(1)
        z = pt / pt.sum()
        expected = [
            np.sqrt(e**2 - px**2 - py**2 - pz**2),
            sample["n_const"][jet],
            np.sqrt((pt**2).sum()) / pt.sum(),
            (z * r).sum(),
            (z * np.sqrt(r / 0.4)).sum(),
            (z * (r / 0.4) ** 2).sum(),
        ]
        np.testing.assert_allclose(features[jet], expected, rtol=2e-4)
    # with the species' masses, the jet mass is FastJet's (E-scheme, massive four-vectors)
    np.testing.assert_allclose(features[:, 0], sample["jet_mass"], rtol=2e-3)


def test_feature_envelope_is_the_propagated_constituent_envelope(train: ModuleType) -> None:
    sample = train.load(EXAMPLE / "data" / "nominal.npz")
    table = train.propagated_envelope(sample)
    assert table["n_const"] == {"frozen": True} and table["ptd"]["max"] == 1.0
    # finite differences on 40 jets: sum_i |f(x + h e_i) - f(x - h e_i)| / 2h * sigma_i
    jets = {k: v[:40] for k, v in sample.items()}
    parts = jets["parts"].astype(np.float64)
    mask, n_const = jets["mask"].astype(np.float64), jets["n_const"].astype(np.float64)
    base = train.jet_features(parts, mask, n_const)
    worst = np.zeros_like(base)
    sigmas = (0.02 * parts[..., 0], np.full(mask.shape, 0.003), np.full(mask.shape, 0.003))
    for column, sigma in enumerate(sigmas):
        for slot in range(int(mask.sum(1).max())):
            step = np.zeros_like(parts)
            step[:, slot, column] = 1e-4 * np.where(column == 0, parts[:, slot, 0], 1.0)
            up = train.jet_features(parts + step, mask, n_const)
            down = train.jet_features(parts - step, mask, n_const)
            h = step[:, slot, column][:, None]
            slope = np.divide(up - down, 2 * h, out=np.zeros_like(up), where=h > 0)
            worst += np.abs(slope) * (sigma[:, slot] * mask[:, slot])[:, None]
    assert np.all(np.isfinite(worst))
    small = train.propagated_envelope(jets)
    for k, name in enumerate(train.FEATURES):
        if name == "n_const":
            continue
        median = np.median(worst[:, k] / np.abs(base[:, k]))
        relative = small[name]["relative"]
        assert median <= relative <= median * 1.1 + 1e-3, name  # rounded up, 2 digits


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact binomial interval from the beta quantiles (scipy), ends pinned at 0 and 1."""
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(scipy_stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def real_rows(array: np.ndarray, mask: np.ndarray | None, features: int) -> np.ndarray:
    """(entries, features) float64, padding left out where the input has a mask."""
    rows = array.reshape(-1, features).astype(np.float64)
    return rows if mask is None else rows[mask.reshape(-1) > 0]


def test_specs_run_and_agree_with_independent_figures(built: Path) -> None:
    """Every figure recomputed outside robustcheck: AUCs with scikit-learn, decisions with
    onnxruntime, the Clopper-Pearson interval and the KS p-values with scipy."""
    import onnxruntime

    for name in ("dnn", "dnn_adv", "pfn"):
        for suffix in (".pt2", ".onnx", ".robust.toml"):
            assert (built / f"{name}{suffix}").is_file()
        doc = tomllib.loads((built / f"{name}.robust.toml").read_text())
        run = SpecRun.from_path(built / f"{name}.robust.toml", device="cpu")
        results = {r.name: r for r in run.run()}
        assert len(results) == 8
        session = onnxruntime.InferenceSession(
            str(built / f"{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        inputs = [i.name for i in session.get_inputs()]
        aucs = []
        for sample in ("nominal", "alternative"):
            table = doc["data"][sample]
            with np.load(built / table["path"]) as arrays:
                feed = {i: arrays[table["inputs"][i]] for i in inputs}
                labels = arrays[table["labels"]]
            logits = session.run(None, feed)[0]
            aucs.append(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))
            if sample == "nominal":
                nominal, nominal_labels = feed, labels
                correct = logits.argmax(1) == labels
        resilience = next(r for r in results.values() if r.type == "resilience")
        assert resilience.figures["auc_nominal"] == pytest.approx(aucs[0], abs=1e-6)
        assert resilience.figures["auc_alternative"] == pytest.approx(aucs[1], abs=1e-6)
        change = 100 * abs(aucs[0] - aucs[1]) / aucs[0]
        assert resilience.figures["auc_change_percent"] == pytest.approx(change, rel=1e-5)
        for check in doc["checks"]:
            result = results[check["name"]]
            figures = result.figures
            if check["type"] == "loss_surface":
                # the fixture caps the PFN's loss scan at 100 jets (loss_events)
                expected = 100 if name == "pfn" else len(nominal_labels)
                assert figures["n_events"] == check.get("max_events", len(nominal_labels))
                assert figures["n_events"] == expected
            if check["type"] not in ("fooling_rate", "invariance"):
                continue
            if check.get("by_class") or check.get("regions"):
                continue  # control regions: tests/test_invariance_control.py and the like
            attacked = {
                i: x.numpy() for i, x in run.adversaries(check["attack"]).adversarial.items()
            }
            if check["type"] == "fooling_rate":
                # fooled: right at nominal, wrong on the attacked inputs, by onnxruntime
                flipped = session.run(None, {i: attacked[i] for i in inputs})[0].argmax(1)
                n, k = int(correct.sum()), int((correct & (flipped != nominal_labels)).sum())
                assert (figures["n_events"], figures["n_fooled"]) == (n, k)
                assert figures["fooling_rate"] == k / n
                low, high = clopper_pearson(k, n, 0.95)
                assert figures["ci_low"] == pytest.approx(low, rel=1e-12, abs=1e-15)
                assert figures["ci_high"] == pytest.approx(high, rel=1e-12)
                assert result.passed == (high <= check["max"])
                continue
            # invariance: each movable feature's KS test, attacked against nominal, over the
            # real (unpadded) entries; the threshold holds after a Holm correction over the
            # KS and chi-squared tests of every movable feature
            # (compare_to = "independent", the default: the attacked values of one half,
            # split with numpy's generator seeded with split_seed, against the other half)
            pvalues: dict[str, float] = {}
            n_entries = 0
            events = np.arange(len(nominal_labels))
            halves = (events, events)
            if check.get("compare_to", "independent") == "independent":
                order = np.random.default_rng(check.get("split_seed", 0)).permutation(events)
                half = len(events) // 2
                halves = (np.sort(order[:half]), np.sort(order[half:]))
            for input_name, table in doc["inputs"].items():
                features = table["features"]
                masks = [None, None]
                if "mask" in table:
                    masks = [nominal[table["mask"]][h] for h in halves]
                before = real_rows(nominal[input_name][halves[1]], masks[1], len(features))
                after = real_rows(attacked[input_name][halves[0]], masks[0], len(features))
                n_entries = max(n_entries, len(before))
                corrected = {}
                if "mask" in table:
                    # constituents: the KS tests are corrected for the correlation of the
                    # entries of one jet (tests/test_invariance_clusters.py); the distances
                    # are scipy's, the p-values at least scipy's per-entry ones
                    ids = [np.nonzero(np.asarray(m).reshape(len(m), -1))[0] for m in masks]
                    movable = [
                        not (e.get("frozen") or e.get("integer"))
                        for e in (doc["envelope"][input_name][f] for f in features)
                    ]
                    found = compare(
                        {input_name: before},
                        {input_name: after},
                        {input_name: tuple(features)},
                        {input_name: np.array(movable)},
                        check.get("bins", 20),
                        reference_events={input_name: ids[1]},
                        attacked_events={input_name: ids[0]},
                    )
                    corrected = {f.feature: f for f in found.features}
                for j, feature in enumerate(features):
                    entry = doc["envelope"][input_name][feature]
                    if entry.get("frozen") or entry.get("integer"):
                        continue
                    test = scipy_stats.ks_2samp(before[:, j], after[:, j], method="asymp")
                    pvalues[feature] = float(test.pvalue)
                    if feature in corrected:
                        f = corrected[feature]
                        assert f.ks_statistic == pytest.approx(test.statistic, rel=1e-12)
                        assert f.ks_pvalue >= test.pvalue * (1 - 1e-9)
                        assert f.entries_per_event > 1
                        pvalues[feature] = f.ks_pvalue
            assert figures["n_entries"] == n_entries
            n_tests = 2 * len(pvalues)  # KS and chi-squared per movable feature
            assert figures["n_pvalue_tests"] == n_tests
            raw = min(pvalues.values())
            assert figures["min_ks_pvalue_raw"] == pytest.approx(raw, rel=1e-9)
            assert pvalues[figures["min_ks_feature"]] == pytest.approx(raw, rel=1e-9)
            # Holm: the smallest KS p-value ranks at most behind every chi-squared one, so its
            # adjusted value lies between (tests of one kind) x raw and (all tests) x raw
            adjusted = figures["min_ks_pvalue"]
            assert min(1.0, len(pvalues) * raw) - 1e-9 <= adjusted <= min(1.0, n_tests * raw) + 1e-9
            threshold = check["ks_min_pvalue"]
            # adjusted p-values keep the order of the raw ones: any KS test fails iff this one
            assert (figures["n_ks_failing"] > 0) == (adjusted < threshold)
            if adjusted < threshold:
                assert not result.passed


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_constituent_taggers_export_trim_and_attack(built: Path) -> None:
    """The transformer and EdgeConv taggers: ONNX (torch's default exporter, or the legacy one
    where it gives NaN) agrees with the .pt2 program in onnxruntime; robustcheck verifies that their
    scores do not depend on the padding length and trims it; the events PGD fools are the
    ones the .pt2 program, run outside robustcheck, calls wrongly after the attack."""
    import onnxruntime
    import torch

    for name in ("transformer", "edgeconv"):
        doc = tomllib.loads((built / f"{name}.robust.toml").read_text())
        assert doc["model"]["path"] == f"{name}.pt2" and doc["inputs"]["parts"]["trim_padding"]
        with np.load(built / doc["data"]["nominal"]["path"]) as arrays:
            parts, mask, labels = arrays["parts"], arrays["mask"], arrays["label"]
        model = torch.export.load(str(built / f"{name}.pt2")).module()
        with torch.no_grad():
            logits = model(torch.from_numpy(parts), torch.from_numpy(mask)).numpy()
        session = onnxruntime.InferenceSession(
            str(built / f"{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        onnx_logits = session.run(None, {"parts": parts, "mask": mask})[0]
        np.testing.assert_allclose(onnx_logits, logits, atol=1e-4)
        run = SpecRun.from_path(built / f"{name}.robust.toml", device="cpu")
        outcome = run.adversaries("pgd_1sigma")
        assert "trim_padding" in outcome.description
        np.testing.assert_allclose(run.log_probs().exp().numpy(), _softmax(logits), atol=1e-5)
        adversarial = outcome.adversarial["parts"]
        assert float(adversarial[torch.from_numpy(mask) == 0].abs().sum()) == 0.0  # padding
        with torch.no_grad():
            after = model(adversarial, torch.from_numpy(mask)).numpy().argmax(1)
        correct = logits.argmax(1) == labels
        assert outcome.correct.numpy().tolist() == correct.tolist()
        assert outcome.fooled.numpy().tolist() == (correct & (after != labels)).tolist()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def test_adversarial_dnn_uses_the_spec_envelope(built: Path, train: ModuleType) -> None:
    from robustcheck.spec import load_spec

    spec = load_spec(built / "dnn_adv.robust.toml")
    sample = train.load(EXAMPLE / "data" / "nominal.npz")
    training_jets = train.split(len(sample["label"]), 1, (0.6, 0.1))[0]
    table = train.propagated_envelope({k: v[training_jets] for k, v in sample.items()})
    for feature, entry in spec.envelope["jets"].items():
        assert entry.relative == table[feature].get("relative")
        assert entry.frozen == table[feature].get("frozen", False)


@pytest.mark.skipif(
    importlib.util.find_spec("pythia8mc") is None or importlib.util.find_spec("fastjet") is None,
    reason="generation needs the examples extra (pythia8mc, fastjet)",
)
def test_generation_with_pythia(tmp_path: Path) -> None:
    generate = example_module("generate")
    written = generate.generate(
        {"nominal": 30, "alternative": 30},
        tmp_path,
        seed=7,
        workers=1,
        chunk_size=15,
        pad=64,
        verbose=False,
    )
    for sample, path in written.items():
        with np.load(path) as data:
            assert data["parts"].shape == (30, 64, 4) and data["parts"].dtype == np.float32
            assert data["label"].tolist() == [1] * 15 + [0] * 15
            assert np.all((data["jet_pt"] >= 500) & (data["jet_pt"] <= 550))
            assert np.all(np.abs(data["jet_y"]) < 1.7)
            settings = list(data["settings"])
            assert ("TimeShower:alphaSvalue = 0.120" in settings) == (sample == "alternative")
            real = data["mask"] > 0
            assert np.all(np.abs(data["parts"][..., 1:3][real]) < 0.6)
            pid = np.abs(data["parts"][..., 3][real])
            assert not np.isin(pid, [12, 14, 16]).any()  # neutrinos are invisible
            assert {22, 211} <= set(pid.astype(int).tolist())


def test_generation_reports_its_progress_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal (a batch job's log) a line per finished chunk: jets, rate, time left.
    PYTHIA is replaced by a stand-in that returns empty jets of the chunk's class."""
    generate = example_module("generate")

    def fake_chunk(chunk: object) -> tuple[object, dict[str, np.ndarray], float, int]:
        n = chunk.n_jets  # type: ignore[attr-defined]
        arrays = {
            "parts": np.zeros((n, chunk.pad, 4), np.float32),  # type: ignore[attr-defined]
            "n_const": np.zeros(n, np.int64),
            "label": np.full(n, chunk.label, np.int64),  # type: ignore[attr-defined]
        }
        return chunk, arrays, 0.01, 10 * n

    monkeypatch.setattr(generate, "run_chunk", fake_chunk)
    generate.generate({"nominal": 30, "alternative": 10}, tmp_path, workers=1, chunk_size=10)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("generated")]
    assert [line.split(" jets")[0] for line in lines] == [
        f"generated {done}/40"
        for done in (10, 15, 25, 30, 35, 40)  # chunks of 10 + 5 per class
    ]
    assert lines[-1].endswith("jets/s, about 0.0 min left") and "(100%)" in lines[-1]
