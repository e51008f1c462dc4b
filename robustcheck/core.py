"""The core every door (pytest plugin, CLI, Python API) calls: one SpecRun per spec.

A SpecRun loads the model and data once, evaluates the nominal sample once and computes each
named attack once, however many checks use it.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from robustcheck import registry
from robustcheck.attacks.base import Attack
from robustcheck.baseline import Baseline
from robustcheck.data import Dataset, load_dataset
from robustcheck.decision import Decision
from robustcheck.engine import (
    default_batch_size,
    evaluate,
    resolve_device,
    run_attack,
    take,
    to_tensors,
)
from robustcheck.envelope import Envelope, Inputs
from robustcheck.errors import DataError, ModelError, RobustcheckError, SpecError
from robustcheck.result import CheckResult
from robustcheck.schema import validate
from robustcheck.spec import CheckSpec, Spec, load_spec
from robustcheck.stats import threshold_at_efficiency
from robustcheck.taggers import load_tagger
from robustcheck.taggers.base import Tagger

EVAL_BATCH = 8192
# white-box attacks in the epsilon box, for which spsa stands in when gradients are unavailable
# constrained_pgd is not here: spsa neither keeps the distributions nor resets unfooled
# events, so standing in for it would test another threat model
SPSA_STANDS_IN_FOR = ("fgsm", "pgd")


@dataclass
class Adversaries:
    """An attack's outcome on the nominal sample, with the decisions before and after."""

    attack: str
    description: str
    epsilon: float
    seed: int
    nominal: Inputs
    adversarial: Inputs
    log_probs: torch.Tensor
    correct: torch.Tensor
    fooled: torch.Tensor
    sigma: Inputs
    real: Inputs
    features: dict[str, tuple[str, ...]]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return len(self.correct)

    def mean_shift_of_fooled(self) -> list[tuple[str, float]]:
        """Mean |shift| in sigma per feature over the fooled events, largest first.

        Padded particle entries are left out of the mean. Features are named as in the spec,
        as ``input.feature`` where two inputs share a feature name.
        """
        if not bool(self.fooled.any()):
            return []
        names = [f for features in self.features.values() for f in features]
        out = []
        for name, features in self.features.items():
            shift = (self.adversarial[name] - self.nominal[name])[self.fooled]
            sigma = self.sigma[name][self.fooled]
            pulls = torch.where(sigma > 0, shift.abs() / sigma.clamp_min(1e-30), 0.0)
            real = self.real[name][self.fooled].reshape(-1, 1).to(pulls.dtype)
            pulls = (pulls.reshape(-1, len(features)) * real).sum(0) / real.sum().clamp_min(1.0)
            labels = [f if names.count(f) == 1 else f"{name}.{f}" for f in features]
            out += [(f, float(v)) for f, v in zip(labels, pulls, strict=False)]
        return sorted(out, key=lambda item: -item[1])


class SpecRun:
    """Everything one spec needs, loaded lazily and computed once."""

    def __init__(
        self,
        spec: Spec,
        *,
        device: str | None = None,
        seed: int | None = None,
        baseline: Path | None = None,
        record_to: Baseline | None = None,
    ):
        """``baseline`` overrides the spec's own; ``record_to`` collects raw results."""
        self.spec = spec
        self.device_name = device or spec.model.device
        self.seed_override = seed
        self.baseline_path = baseline or spec.baseline
        self.record_to = record_to
        self._adversaries: dict[tuple[object, ...], Adversaries] = {}

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: object) -> SpecRun:
        return cls(load_spec(path), **kwargs)  # type: ignore[arg-type]

    @cached_property
    def device(self) -> torch.device:
        try:
            device = resolve_device(self.device_name)
            torch.empty(0, device=device)
        except Exception as exc:
            raise ModelError(
                f"device {self.device_name!r} is not usable here: {exc}",
                file=self.spec.path,
                field="model.device",
                fix='use device = "auto" or "cpu"',
            ) from None
        return device

    @cached_property
    def tagger(self) -> Tagger:
        return load_tagger(self.spec).to(self.device)

    @cached_property
    def envelope(self) -> Envelope:
        return Envelope.from_spec(self.spec)

    def dataset(self, name: str) -> Dataset:
        return self._datasets[name]

    @cached_property
    def _datasets(self) -> dict[str, Dataset]:
        out = {}
        for name, data in self.spec.data.items():
            dataset = load_dataset(data, self.spec.path)
            shapes = {key: value.shape for key, value in dataset.inputs.items()}
            self.envelope.check_shapes(shapes, str(data.path))
            out[name] = dataset
        return out

    @cached_property
    def _inputs(self) -> dict[str, tuple[Inputs, torch.Tensor]]:
        perturbed = self.spec.perturbed_inputs()
        return {
            name: (to_tensors(dataset, perturbed), torch.from_numpy(dataset.labels))
            for name, dataset in self._datasets.items()
        }

    def inputs(self, sample: str = "nominal") -> tuple[Inputs, torch.Tensor]:
        """CPU tensors of a sample's inputs and its labels."""
        return self._inputs[sample]

    def attacks_computed(self) -> dict[tuple[object, ...], Adversaries]:
        """The attack outcomes computed so far, keyed as ``adversaries()`` caches them.

        Keys start with (attack name, decision key, epsilon override or None). For reports.
        """
        return dict(self._adversaries)

    def log_probs(self, sample: str = "nominal") -> torch.Tensor:
        return self._log_probs[sample]

    @cached_property
    def _log_probs(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.spec.data:
            inputs, labels = self.inputs(name)
            with self._model_errors(inputs):
                out[name] = evaluate(self.tagger, inputs, EVAL_BATCH)
            classes = out[name].shape[1]
            if self.spec.model.signal_class >= classes:
                raise ModelError(
                    f"signal_class {self.spec.model.signal_class} but the model gives "
                    f"{classes} classes",
                    file=self.spec.path,
                    field="model.signal_class",
                )
            if len(labels) and int(labels.max()) >= classes:
                raise DataError(
                    f"labels go up to {int(labels.max())}, but the model gives {classes} "
                    f"classes (0 to {classes - 1})",
                    file=self.spec.data[name].path,
                    field=f"data.{name}.labels",
                    fix="labels must be class indices of the model's output",
                )
        return out

    def weights(self, sample: str = "nominal") -> np.ndarray | None:
        """Per-event weights of a sample, or None."""
        return self._datasets[sample].weights

    def is_signal(self, sample: str = "nominal") -> np.ndarray:
        """1 for signal-class events, 0 for the others."""
        return (self.inputs(sample)[1].numpy() == self.spec.model.signal_class).astype(np.int64)

    def discriminant(self, log_probs: torch.Tensor) -> np.ndarray:
        """The signal-class probability of every event."""
        return log_probs[:, self.spec.model.signal_class].double().exp().numpy()

    def decision(self, working_point: Mapping[str, float] | None = None) -> Decision:
        """Argmax, or a threshold fixed on the nominal sample at a signal efficiency."""
        signal = self.spec.model.signal_class
        if not working_point:
            return Decision(signal)
        efficiency = float(working_point["signal_efficiency"])
        is_signal = self.is_signal("nominal").astype(bool)
        if not is_signal.any():
            raise DataError(
                "no signal events in the nominal sample for the working point",
                file=self.spec.data["nominal"].path,
                field="working_point",
            )
        scores = self.discriminant(self.log_probs("nominal"))[is_signal]
        weights = self.weights("nominal")
        threshold = threshold_at_efficiency(
            scores, efficiency, None if weights is None else weights[is_signal]
        )
        return Decision(signal, threshold)

    def seed_for(self, attack: str) -> int:
        if self.seed_override is not None:
            return self.seed_override
        return int(self.spec.attacks[attack].options["seed"])

    def make_attack(
        self, name: str, epsilon: float | None = None, method: str | None = None
    ) -> Attack:
        """The named attack; ``method`` swaps in another method with the same budget: every
        option both methods have (epsilon, seed, batch size, steps...), the rest at defaults."""
        spec = self.spec.attacks[name]
        if epsilon is not None:
            spec = replace(spec, options={**spec.options, "epsilon": epsilon})
        if method is not None and method != spec.method:
            declared = registry.attacks()[method].options
            shared = {
                k: v
                for k, v in spec.options.items()
                if k in declared and k != "scan" and v is not None
            }
            options = validate(
                {"method": method, **shared},
                registry.attacks()[method].options,
                f"attacks.{name}",
                "",
            )
            spec = replace(spec, method=method, options=options)
        return registry.attacks()[spec.method].load()(spec, self.seed_for(name))

    def _gradient_fallback(self, attack_name: str, inputs: Inputs) -> str:
        """Prepare input gradients; when the ONNX bridge cannot give them to an attack in the
        epsilon box, the warning for the gradient-free ``spsa`` fallback ("" when not needed)."""
        tagger = self.tagger
        method = self.spec.attacks[attack_name].method
        if method not in SPSA_STANDS_IN_FOR:  # another threat model: the error stands
            with self._model_errors(inputs):
                tagger.prepare_gradients(take(inputs, slice(0, 512), tagger.device))
            return ""
        if getattr(tagger, "bridge_error", None) is None:
            try:
                with self._model_errors(inputs):
                    tagger.prepare_gradients(take(inputs, slice(0, 512), tagger.device))
            except ModelError:
                if getattr(tagger, "bridge_error", None) is None:
                    raise
        reason = getattr(tagger, "bridge_error", None)
        if reason is None:
            return ""
        message = (
            f"WARNING: gradients unavailable ({reason}): attack {attack_name!r} ({method}) fell "
            "back to the gradient-free spsa attack with the same epsilon"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        return message

    def adversaries(
        self,
        attack_name: str,
        decision: Decision | None = None,
        epsilon: float | None = None,
        full: bool = False,
        method: str | None = None,
    ) -> Adversaries:
        """The named attack on the nominal sample, computed once per set of arguments.

        ``epsilon`` overrides the attack's own (for scans). By default only correctly
        classified events are attacked, each until its decision flips (what a fooling rate
        needs); ``full`` attacks every event with the whole budget (what an AUC needs).
        ``method`` runs another method with the same budget (cached as "NAME (method)").
        When a white-box attack cannot get gradients from an ONNX model, it falls back to
        ``spsa`` and the outcome's ``warnings`` say so.
        """
        decision = decision or Decision(self.spec.model.signal_class)
        label = attack_name if method is None else f"{attack_name} ({method})"
        key = (label, decision.key, epsilon, full)
        if key in self._adversaries:
            return self._adversaries[key]
        attack = self.make_attack(attack_name, epsilon, method)
        inputs, labels = self.inputs("nominal")
        log_probs = self.log_probs("nominal")
        target = decision.target(labels)
        correct = decision.decide(log_probs) == target
        tagger = self.tagger
        notes = []
        if attack.needs_gradients:
            note = self._gradient_fallback(attack_name, inputs)
            if note:
                notes.append(note)
                attack = self.make_attack(attack_name, epsilon, "spsa")
        batch_size = self.spec.attacks[attack_name].options.get("batch_size") or (
            default_batch_size(tagger.device)
        )
        with self._model_errors(inputs):
            select = torch.ones_like(correct) if full else correct
            outcome = run_attack(
                attack,
                tagger,
                self.envelope,
                inputs,
                labels,
                decision,
                select,
                batch_size,
                early_stop=not full,
            )
            adv_inputs = {**inputs, **outcome.adversarial}
            adv_log_probs = evaluate(tagger, adv_inputs, EVAL_BATCH)
        fooled = correct & (decision.decide(adv_log_probs) != target)
        sigma, real = self._sigma_and_real
        result = Adversaries(
            attack=attack_name,
            description=attack.describe() + (" (gradient-free fallback)" if notes else ""),
            epsilon=attack.epsilon,
            seed=attack.seed,
            nominal=inputs,
            adversarial=adv_inputs,
            log_probs=adv_log_probs,
            correct=correct,
            fooled=fooled,
            sigma=sigma,
            real=real,
            features={name: env.features for name, env in self.envelope.inputs.items()},
            seconds=outcome.seconds,
            warnings=notes,
        )
        self._adversaries[key] = result
        return result

    @cached_property
    def _sigma_and_real(self) -> tuple[Inputs, Inputs]:
        """Each nominal entry's sigma, and which entries are real (not padding): per run."""
        inputs, _ = self.inputs("nominal")
        sigma = {name: env.sigma(inputs[name]) for name, env in self.envelope.inputs.items()}
        real = {
            name: inputs[env.mask] != 0
            if env.mask is not None
            else torch.ones(inputs[name].shape[:-1], dtype=torch.bool)
            for name, env in self.envelope.inputs.items()
        }
        return sigma, real

    @contextlib.contextmanager
    def _model_errors(self, inputs: Inputs) -> Iterator[None]:
        """Turn an exception from inside the model into one clear ModelError."""
        try:
            yield
        except RobustcheckError:
            raise
        except Exception as exc:
            shapes = {name: tuple(x.shape) for name, x in inputs.items()}
            text = str(exc).strip().splitlines()
            first = text[0] if text else type(exc).__name__
            raise ModelError(
                f"the model failed on inputs of shapes {shapes}: {type(exc).__name__}: {first}",
                file=self.spec.path,
                field="model.path",
                fix="check that [inputs.*] features and the data match what the model expects",
            ) from None

    def run_check(self, check: CheckSpec) -> CheckResult:
        """Run one check of this spec, and its regression test when it asks for one."""
        implementation = registry.checks()[check.type].load()
        result = implementation(check, self).evaluate()
        if self.record_to is not None:
            self.record_to.add(self, check, copy.deepcopy(result))
        if check.options.get("no_regression"):
            if self.record_to is not None and _same_file(self.baseline_path, self.record_to.path):
                result.details.append(
                    f"baseline {self.baseline_path.name} is being recorded: not compared"
                )
            else:
                result = self._against_baseline(check, result)
        return result

    def _against_baseline(self, check: CheckSpec, result: CheckResult) -> CheckResult:
        if self.baseline_path is None:
            raise SpecError(
                "no_regression needs a baseline",
                file=self.spec.path,
                field=f"checks[{check.index}].no_regression",
                fix='set baseline = "baseline.json" in the spec or pass --robustcheck-baseline',
            )
        return self._baseline.compare(self, check, result)

    @cached_property
    def _baseline(self) -> Baseline:
        assert self.baseline_path is not None
        return Baseline.load(self.baseline_path)

    def run(self) -> list[CheckResult]:
        return [self.run_check(check) for check in self.spec.checks]


def run_spec(
    path: str | Path, *, device: str | None = None, seed: int | None = None
) -> list[CheckResult]:
    """Load a spec, run all its checks and return their results."""
    return SpecRun.from_path(path, device=device, seed=seed).run()


def _same_file(a: Path | None, b: Path) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()
