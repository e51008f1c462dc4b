"""The core every door (pytest plugin, CLI, Python API) calls: one SpecRun per spec.

A SpecRun loads the model and data once, evaluates the nominal sample once and computes each
named attack once, however many checks use it.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustcheck import registry
from robustcheck.attacks.base import Attack
from robustcheck.baseline import Baseline
from robustcheck.data import Dataset, load_dataset, read_chunks
from robustcheck.decision import Decision
from robustcheck.digest import file_digest, json_digest, model_file_digest
from robustcheck.engine import (
    COUPLED_BATCH,
    default_batch_size,
    default_particle_batch_size,
    evaluate,
    resolve_device,
    take,
    to_tensors,
)
from robustcheck.envelope import Envelope, Inputs
from robustcheck.errors import (
    DataError,
    ModelError,
    RobustcheckError,
    SpecError,
    exception_text,
)
from robustcheck.padding import TRIM_TOLERANCE, VERIFY_BATCH, VERIFY_EVENTS, PaddingTrim
from robustcheck.ranges import AttackRange, Ranges, add_shifts, attack_range, merge_kept
from robustcheck.report.progress import ProgressBar, spec_label
from robustcheck.result import CheckResult
from robustcheck.sanity import (
    SCORE_EVENTS,
    Nominal,
    SanityError,
    assess,
    bounds_message,
    merge_bounds,
    out_of_bounds,
)
from robustcheck.spec import CheckSpec, Spec, load_spec
from robustcheck.stats import threshold_at_efficiency
from robustcheck.stream import (
    KEEP_SEED,
    Chunk,
    Reservoir,
    ShiftSums,
)
from robustcheck.taggers import load_tagger
from robustcheck.taggers.base import Tagger

EVAL_BATCH = 8192


@dataclass
class Adversaries:
    """An attack's outcome on the nominal sample, with the decisions before and after.

    ``log_probs``, ``correct`` and ``fooled`` cover every event. ``nominal``, ``adversarial``,
    ``sigma`` and ``real`` hold the events kept in memory: all of them, or, for a sample
    streamed in chunks, the random sample at positions ``kept`` (None: all events).
    """

    attack: str
    description: str
    epsilon: float
    seed: int
    nominal: Inputs
    adversarial: Inputs
    log_probs: torch.Tensor
    correct: torch.Tensor
    fooled: torch.Tensor
    sigma: Mapping[str, torch.Tensor]  # a SigmaOf in a run: computed when read (sigma_rows)
    real: Inputs
    features: dict[str, tuple[str, ...]]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    fooled_shifts: list[tuple[str, float]] = field(default_factory=list)
    kept: np.ndarray | None = None
    uses_seed: bool = True  # whether the attack that ran drew random numbers
    fallback: str | None = None  # the method that stood in for the named attack's, if any
    notes: list[str] = field(default_factory=list)  # the attack's own (Attack.report)
    report_figures: dict[str, int | float | str] = field(default_factory=dict)
    # per-event figures the attack recorded (e.g. min_epsilon's "radius"), over every event;
    # NaN where the event was not attacked
    per_event: dict[str, torch.Tensor] = field(default_factory=dict)
    # figures derived from this outcome, computed once for every check that reads them
    # (the invariance check's [observables] on the nominal and attacked inputs)
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def attack_figures(self) -> dict[str, int | float | str]:
        """A check's figures about the attack that ran: its seed when the seed shaped the
        outcome, the stand-in method of a gradient-free fallback, and the attack's own."""
        out: dict[str, int | float | str] = {"seed": self.seed} if self.uses_seed else {}
        if self.fallback:
            out["fallback"] = self.fallback
        return {**out, **self.report_figures}

    @property
    def n_events(self) -> int:
        return len(self.correct)

    def mean_shift_of_fooled(self) -> list[tuple[str, float]]:
        """Mean |shift| in sigma per feature over all fooled events, largest first.

        Padded particle entries are left out of the mean. Features are named as in the spec,
        as ``input.feature`` where two inputs share a feature name.
        """
        return self.fooled_shifts

    def kept_note(self) -> str:
        """How the in-memory events were chosen, for messages ("" when they are all events)."""
        if self.kept is None:
            return ""
        return (
            f"on a random sample of {len(self.kept):,} of the {self.n_events:,} events "
            f"(keep_events, seed {KEEP_SEED}; the sample is streamed in chunks)"
        )


class SigmaOf(Mapping[str, torch.Tensor]):
    """Sigma of every entry of the nominal inputs held in memory, per input, computed when it
    is read rather than stored: stored, it would be one more copy of the inputs' size.

    ``rows(name, index)`` gives the sigma of some events only (the same values: the envelope's
    sigma is computed entry by entry)."""

    def __init__(self, envelope: Envelope, inputs: Inputs) -> None:
        self.envelope = envelope
        self.inputs = inputs

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.envelope.inputs[name].sigma(self.inputs[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.envelope.inputs)

    def __len__(self) -> int:
        return len(self.envelope.inputs)

    def rows(self, name: str, index: torch.Tensor | slice) -> torch.Tensor:
        return self.envelope.inputs[name].sigma(self.inputs[name][index])


def sigma_rows(
    sigma: Mapping[str, torch.Tensor], name: str, index: torch.Tensor | slice
) -> torch.Tensor:
    """Sigma of the entries of some events of an input (``Adversaries.sigma[name][index]``),
    without computing it for every event where it is computed when read."""
    if isinstance(sigma, SigmaOf):
        return sigma.rows(name, index)
    return sigma[name][index]


@dataclass
class Sample:
    """What a run keeps of one sample: per-event figures of every event, and the inputs of
    the events held in memory (all, or the random sample at positions ``kept``)."""

    labels: torch.Tensor
    weights: np.ndarray | None
    log_probs: torch.Tensor | None  # evaluated when first asked for, unless streamed
    inputs: Inputs
    kept_labels: torch.Tensor
    kept: np.ndarray | None = None
    out_of_bounds: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


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
        cluster: Ranges | None = None,
    ):
        """``baseline`` overrides the spec's own; ``record_to`` collects raw results;
        ``cluster`` spreads the event ranges of samples and attacks over Dask workers."""
        self.spec = spec
        self.device_name = device or spec.model.device
        self.seed_override = seed
        self.baseline_path = baseline or spec.baseline
        self.record_to = record_to
        self.cluster = cluster
        self._adversaries: dict[tuple[object, ...], Adversaries] = {}
        self._samples: dict[str, Sample] = {}
        self._trim: tuple[PaddingTrim | None, str] | None = None  # set on first use

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
        with self._no_exit("loading"):
            return load_tagger(self.spec).to(self.device)

    @cached_property
    def envelope(self) -> Envelope:
        return Envelope.from_spec(self.spec)

    def _sample(self, name: str) -> Sample:
        if name not in self._samples:
            self._samples[name] = self._read_sample(name)
        return self._samples[name]

    def _read_sample(self, name: str) -> Sample:
        """Read and validate a sample at once, or stream it in chunks: then the model
        evaluates each chunk as it passes, so that the file is not read twice."""
        data = self.spec.data[name]
        bounds: dict[tuple[str, str], tuple[int, float]] = {}
        if data.chunk_size is None:
            dataset = load_dataset(data, self.spec.path)
            if not len(dataset):
                raise self._no_events(name)
            chunk = self._chunk(0, dataset, check=True)
            merge_bounds(bounds, self._bounds(chunk, name))
            sample = Sample(chunk.labels, dataset.weights, None, chunk.inputs, chunk.labels, None)
        elif self.cluster is not None:
            merged, kept = self.cluster.read_sample(self, name)
            bounds = merged.bounds
            sample = Sample(
                merged.labels,
                merged.weights,
                merged.log_probs,
                merged.inputs,
                merged.kept_labels,
                kept,
            )
        else:
            reservoir = Reservoir(data.keep_events)
            labels, weights, log_probs = [], [], []
            bar = ProgressBar(f"{spec_label(self.spec.path)}: evaluating {name}", data.max_events)
            for start, dataset in bar.over(read_chunks(data, self.spec.path, data.chunk_size)):
                chunk = self._chunk(start, dataset, check=True)
                merge_bounds(bounds, self._bounds(chunk, name))
                log_probs.append(self._evaluate(chunk, name, bar.advance))
                labels.append(chunk.labels)
                weights.append(dataset.weights)
                reservoir.offer(chunk)
                del chunk, dataset  # read_chunks frees a chunk only once nothing holds it
            if not labels:
                raise self._no_events(name)
            kept, inputs, kept_labels = reservoir.sample()
            all_weights = None if weights[0] is None else np.concatenate(weights)
            sample = Sample(
                torch.cat(labels), all_weights, torch.cat(log_probs), inputs, kept_labels, kept
            )
        sample.out_of_bounds = bounds
        if bounds:
            self._warn(self._bounds_note(name, bounds))
        return sample

    def _warn(self, message: str) -> None:
        """A warning about the spec's setup, shown at the spec file (not in robustcheck)."""
        warnings.warn_explicit(
            f"robustcheck: {message}", UserWarning, str(self.spec.path), 1, module="robustcheck"
        )

    def _no_events(self, name: str) -> DataError:
        data = self.spec.data[name]
        return DataError(
            "the sample has no events",
            file=data.path,
            field=f"data.{name}.path",
            fix="point the spec at a file with events (and check max_events)",
        )

    def _bounds(self, chunk: Chunk, name: str) -> dict[tuple[str, str], tuple[int, float]]:
        """Entries of a chunk outside the envelope's min/max: a DataError with
        ``strict_bounds``, else counted for a warning."""
        found = out_of_bounds(self.envelope, chunk.inputs)
        data = self.spec.data[name]
        if found and data.strict_bounds:
            raise DataError(
                self._bounds_text(found)
                + (f" (in the chunk from event {chunk.start})" if chunk.start else ""),
                file=data.path,
                field=f"data.{name}.strict_bounds",
                fix="correct the data or the envelope's min/max, or set strict_bounds = false "
                "to only warn",
            )
        return found

    def _bounds_text(self, bounds: dict[tuple[str, str], tuple[int, float]]) -> str:
        return bounds_message(bounds, self.envelope, len(self.envelope.inputs) == 1)

    def _bounds_note(self, name: str, bounds: dict[tuple[str, str], tuple[int, float]]) -> str:
        return (
            f"[data.{name}] {self._bounds_text(bounds)}; attacks never move an entry further "
            "outside (strict_bounds = true makes this an error)"
        )

    def _chunk(self, start: int, dataset: Dataset, check: bool = False) -> Chunk:
        if check:
            shapes = {key: value.shape for key, value in dataset.inputs.items()}
            self.envelope.check_shapes(shapes, str(dataset.source))
        inputs = to_tensors(dataset, self.spec.perturbed_inputs())
        return Chunk(start, inputs, torch.from_numpy(dataset.labels))

    def _chunks(self, name: str) -> Iterator[Chunk]:
        """The sample's events chunk by chunk: the one in memory, or read again from its file."""
        data = self.spec.data[name]
        sample = self._sample(name)
        if data.chunk_size is None:
            yield Chunk(0, sample.inputs, sample.labels)
            return
        for start, dataset in read_chunks(data, self.spec.path, data.chunk_size):
            chunk = self._chunk(start, dataset)
            del dataset
            yield chunk
            del chunk  # so that read_chunks frees it before it reads the next

    def _evaluate(
        self, chunk: Chunk, name: str, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Class log-probabilities of a chunk, with the model's and labels' errors made clear."""
        trim = self._padding_trim(chunk.inputs, name)
        with self._model_errors(chunk.inputs):
            log_probs = evaluate(
                self.tagger, chunk.inputs, self._eval_batch, trim, progress, chunk.start
            )
        classes = log_probs.shape[1]
        if self.spec.model.signal_class >= classes:
            raise ModelError(
                f"signal_class {self.spec.model.signal_class} but the model gives "
                f"{classes} classes",
                file=self.spec.path,
                field="model.signal_class",
            )
        labels = chunk.labels
        if len(labels) and int(labels.max()) >= classes:
            raise DataError(
                f"labels go up to {int(labels.max())}, but the model gives {classes} "
                f"classes (0 to {classes - 1})",
                file=self.spec.data[name].path,
                field=f"data.{name}.labels",
                fix="labels must be class indices of the model's output",
            )
        return log_probs

    def inputs(self, sample: str = "nominal") -> tuple[Inputs, torch.Tensor]:
        """CPU tensors of the inputs and labels of a sample's events held in memory: all of
        them, or for a sample streamed in chunks its random sample of ``keep_events``."""
        data = self._sample(sample)
        return data.inputs, data.kept_labels

    def kept(self, sample: str = "nominal") -> np.ndarray | None:
        """Positions of the events ``inputs()`` holds, or None when it holds every event."""
        return self._sample(sample).kept

    def labels(self, sample: str = "nominal") -> torch.Tensor:
        """The class label of every event of a sample."""
        return self._sample(sample).labels

    def n_events(self, sample: str = "nominal") -> int:
        return len(self._sample(sample))

    def attacks_computed(self) -> dict[tuple[object, ...], Adversaries]:
        """The attack outcomes computed so far, keyed as ``adversaries()`` caches them.

        Keys start with (attack name, decision key, epsilon override or None). For reports.
        """
        return dict(self._adversaries)

    def log_probs(self, sample: str = "nominal") -> torch.Tensor:
        """Class log-probabilities of every event of a sample."""
        data = self._sample(sample)
        if data.log_probs is None:
            label = f"{spec_label(self.spec.path)}: evaluating {sample}"
            with ProgressBar(label, len(data.labels)) as bar:
                data.log_probs = self._evaluate(
                    Chunk(0, data.inputs, data.labels), sample, bar.advance
                )
        return data.log_probs

    def weights(self, sample: str = "nominal") -> np.ndarray | None:
        """Per-event weights of a sample, or None."""
        return self._sample(sample).weights

    def is_signal(self, sample: str = "nominal") -> np.ndarray:
        """1 for signal-class events, 0 for the others."""
        return (self.labels(sample).numpy() == self.spec.model.signal_class).astype(np.int64)

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
                if k in declared and k not in ("method", "scan") and v is not None
            }
            options = registry.attack_options(method, shared, f"attacks.{name}", "")
            spec = replace(spec, method=method, options=options)
        attack = registry.attacks()[spec.method].load()(spec, self.seed_for(name))
        attack.use_spec(self.spec)
        return attack

    def _gradient_fallback(self, attack_name: str, inputs: Inputs) -> str:
        """Prepare input gradients. When the model cannot give them (an ONNX model the bridge
        cannot convert), a white-box attack in the epsilon box fails with a ModelError, unless
        it asks for ``on_gradient_failure = "spsa"``: then the warning for the gradient-free
        fallback ("" when gradients are there)."""
        tagger = self.tagger
        attack = self.spec.attacks[attack_name]
        # spsa may stand in only in the epsilon box; another threat model keeps its error
        stand_in = registry.attacks()[attack.method].spsa_stand_in
        if tagger.bridge_error is None or not stand_in:
            try:
                with self._model_errors(inputs):
                    tagger.prepare_gradients(take(inputs, slice(0, 512), tagger.device))
            except ModelError:
                if tagger.bridge_error is None or not stand_in:
                    raise
        reason = tagger.bridge_error
        if reason is None:
            return ""
        if attack.options.get("on_gradient_failure") != "spsa":
            raise ModelError(
                f"attack {attack_name!r} ({attack.method}) needs input gradients, and the model "
                f"gives none: {reason}",
                file=self.spec.path,
                field=f"attacks.{attack_name}",
                fix="export the torch model (TorchScript or .pt2) for white-box gradients, or "
                'set on_gradient_failure = "spsa" to run the weaker gradient-free spsa attack '
                "instead (its verdicts say so)",
            )
        message = (
            f"WARNING: gradients unavailable ({reason}): attack {attack_name!r} "
            f"({attack.method}) ran as the gradient-free spsa attack with the same epsilon "
            '(on_gradient_failure = "spsa"), which may fool fewer events than white-box '
            f"{attack.method}"
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
        When a white-box attack cannot get gradients from an ONNX model, it fails, or with
        ``on_gradient_failure = "spsa"`` runs ``spsa`` and the outcome's ``warnings`` and
        ``fallback`` say so.
        """
        decision = decision or Decision(self.spec.model.signal_class)
        label = attack_name if method is None else f"{attack_name} ({method})"
        key = (label, decision.key, epsilon, full)
        if key in self._adversaries:
            return self._adversaries[key]
        attack = self.make_attack(attack_name, epsilon, method)
        inputs, _ = self.inputs("nominal")
        labels, log_probs = self.labels("nominal"), self.log_probs("nominal")
        target = decision.target(labels)
        correct = decision.decide(log_probs) == target
        notes = []
        if attack.needs_gradients:
            note = self._gradient_fallback(attack_name, inputs)
            if note:
                notes.append(note)
                attack = self.make_attack(attack_name, epsilon, "spsa")
        batch_size = self._attack_batch_size(attack_name, attack)
        select = torch.ones_like(correct) if full else correct
        adv_log_probs = torch.empty_like(log_probs)
        fooled = torch.zeros_like(correct)
        shifts = ShiftSums(self.envelope)
        kept = self.kept("nominal")
        kept_parts: list[Inputs] = []
        seconds = 0.0
        per_event: dict[str, torch.Tensor] = {}
        bar = ProgressBar(
            f"{spec_label(self.spec.path)}: {label} {attack.epsilon:g} sigma", int(select.sum())
        )
        if self.cluster is not None:
            job = (attack_name, epsilon, "spsa" if notes else method)  # made again on workers
            parts = self.cluster.attack(
                self, job, decision, select, correct, batch_size, full, kept
            )
        else:
            parts = self._attack_here(
                attack, decision, select, correct, batch_size, full, kept, bar.advance
            )
        for part in bar.over(parts):
            rows = part.rows
            if self.cluster is not None and bar.advance is not None:
                bar.advance(int(select[rows].sum()))
            adv_log_probs[rows] = part.log_probs
            seconds += part.seconds
            for figure, values in part.per_event.items():
                if figure not in per_event:
                    shape = (len(correct), *values.shape[1:])
                    per_event[figure] = torch.full(shape, float("nan"), dtype=values.dtype)
                per_event[figure][rows] = values
            fooled[rows] = part.fooled
            add_shifts(shifts, part)
            kept_parts.append(part.adversarial)
            if part.tally:
                attack.add_tally(part.tally)
            del part  # see _chunks
        adversarial = merge_kept(kept_parts)
        sigma, real = self._sigma_and_real
        report_lines, report_figures = attack.report()
        result = Adversaries(
            attack=attack_name,
            description=attack.describe()
            + (" (gradient-free fallback)" if notes else "")
            + (", padding trimmed per batch (trim_padding)" if self._trim_note else ""),
            epsilon=attack.epsilon,
            seed=attack.seed,
            nominal=inputs,
            adversarial=adversarial,
            log_probs=adv_log_probs,
            correct=correct,
            fooled=fooled,
            sigma=sigma,
            real=real,
            features={name: env.features for name, env in self.envelope.inputs.items()},
            seconds=seconds,
            warnings=notes,
            fooled_shifts=shifts.means(),
            kept=kept,
            uses_seed=attack.uses_seed,
            fallback="spsa" if notes else None,
            notes=report_lines,
            report_figures=report_figures,
            per_event=per_event,
        )
        self._adversaries[key] = result
        return result

    def _attack_batch_size(self, attack_name: str, attack: Attack) -> int:
        """The attack's ``batch_size``, else the device's default; for an attack that couples
        the events of a batch, blocks of COUPLED_BATCH events on every device, and a streamed
        sample's ``chunk_size`` must be a multiple of the block."""
        given = self.spec.attacks[attack_name].options.get("batch_size")
        if attack.couples_events:
            size = int(given or COUPLED_BATCH)
            chunk_size = self.spec.data["nominal"].chunk_size
            if chunk_size is not None and chunk_size % size:
                raise SpecError(
                    f"attack {attack_name!r} couples the events of a batch of {size:,} "
                    f"(its distribution penalty), and chunk_size {chunk_size:,} is not a "
                    "multiple of it, so the chunks would cut its batches",
                    file=self.spec.path,
                    field="data.nominal.chunk_size",
                    fix=f"set chunk_size to a multiple of {size:,}, or the attack's batch_size "
                    f"to a divisor of {chunk_size:,}",
                )
            return size
        if given:
            return int(given)
        if self._has_particles:
            return default_particle_batch_size(self.tagger.device)
        return default_batch_size(self.tagger.device)

    def _attack_here(
        self,
        attack: Attack,
        decision: Decision,
        select: torch.Tensor,
        correct: torch.Tensor,
        batch_size: int,
        full: bool,
        kept: np.ndarray | None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[AttackRange]:
        """The attack on the nominal sample chunk by chunk, in this process."""
        for chunk in self._chunks("nominal"):
            rows = chunk.rows
            part = attack_range(
                self,
                attack,
                chunk,
                decision,
                select[rows],
                correct[rows],
                batch_size,
                full=full,
                kept=kept,
                progress=progress,
            )
            del chunk  # see _chunks
            yield part

    @cached_property
    def _has_particles(self) -> bool:
        """Whether a model input is padded (has a mask): then CPU batches are smaller."""
        return any(spec.mask is not None for spec in self.spec.inputs.values())

    @property
    def _eval_batch(self) -> int:
        """Events per forward pass when evaluating a sample."""
        if self._has_particles:
            return min(EVAL_BATCH, default_particle_batch_size(self.tagger.device))
        return EVAL_BATCH

    def _padding_trim(self, inputs: Inputs, sample: str) -> PaddingTrim | None:
        """The spec's ``trim_padding`` inputs, verified on first use: the model's scores on
        the first events of ``inputs`` (normally the nominal sample's) must not change when
        each batch is cut to its longest jet, else a ModelError names the key."""
        if self._trim is None:
            trim = PaddingTrim.of(
                (name, spec.mask)
                for name, spec in self.spec.inputs.items()
                if spec.trim_padding and spec.mask is not None
            )
            note = self._verify_trim(trim, inputs, sample) if trim is not None else ""
            self._trim = (trim, note)
        return self._trim[0]

    @property
    def _trim_note(self) -> str:
        """What every verdict says when padding was trimmed ("" when not)."""
        return self._trim[1] if self._trim is not None else ""

    def _verify_trim(self, trim: PaddingTrim, inputs: Inputs, sample: str) -> str:
        names = [name for names in trim.groups.values() for name in names]
        key = f"inputs.{names[0]}.trim_padding"
        head = {name: x[:VERIFY_EVENTS] for name, x in inputs.items()}
        n = len(next(iter(head.values())))
        with self._model_errors(head):
            full = evaluate(self.tagger, head, VERIFY_BATCH).exp()
        try:
            cut = evaluate(self.tagger, head, VERIFY_BATCH, trim).exp()
        except Exception as exc:
            raise ModelError(
                f"the model fails on inputs cut to fewer padding slots: {exception_text(exc)}",
                file=self.spec.path,
                field=key,
                fix="remove trim_padding = true, or export the model with a dynamic number "
                "of particles",
            ) from None
        bad = int((~torch.isfinite(full).all(1)).sum())
        if bad:
            raise ModelError(
                f"the model gives non-finite scores (NaN or inf) for {bad:,} of the first "
                f"{n:,} events of the {sample} sample, so trim_padding cannot be verified",
                file=self.spec.path,
                field=key,
                fix="check the model and its export on padded jets (a dropped epsilon inside "
                "a log or a division gives NaN there)",
            )
        difference = float((full - cut).abs().max()) if n else 0.0
        if not difference <= TRIM_TOLERANCE:  # NaN fails too
            raise ModelError(
                f"the model's scores depend on the number of padding slots: cutting each batch "
                f"to its longest jet changes a class probability by up to {difference:.3g} "
                f"(tolerance {TRIM_TOLERANCE:g}) on the first {n:,} events of the {sample} "
                "sample",
                file=self.spec.path,
                field=key,
                fix="remove trim_padding = true (the model is not invariant to the padding "
                "length, e.g. it averages over all slots)",
            )
        return (
            f"padding trimmed per batch ({', '.join(names)}: trim_padding); scores agree with "
            f"the untrimmed model to {difference:.1g} on {n:,} events of the {sample} sample"
        )

    @cached_property
    def _sigma_and_real(self) -> tuple[SigmaOf, Inputs]:
        """Sigma of each nominal entry held in memory (computed when read, not stored), and
        which are real (not padding)."""
        inputs, _ = self.inputs("nominal")
        sigma = SigmaOf(self.envelope, inputs)
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
        except SystemExit as exc:
            raise self._exit_error(exc, "evaluating") from None
        except Exception as exc:
            shapes = {name: tuple(x.shape) for name, x in inputs.items()}
            first = exception_text(exc)
            raise ModelError(
                f"the model failed on inputs of shapes {shapes}: {first}",
                file=self.spec.path,
                field="model.path",
                fix="check that [inputs.*] features and the data match what the model expects",
            ) from None

    @contextlib.contextmanager
    def _no_exit(self, when: str) -> Iterator[None]:
        """``sys.exit()`` in the model's code becomes a ModelError, not robustcheck's exit."""
        try:
            yield
        except SystemExit as exc:
            raise self._exit_error(exc, when) from None

    def _exit_error(self, exc: SystemExit, when: str) -> ModelError:
        return ModelError(
            f"the model's code called sys.exit({exc.code!r}) while {when}",
            file=self.spec.path,
            field="model.path",
            fix="remove the exit from the model's module, factory or forward",
        )

    @cached_property
    def nominal(self) -> Nominal:
        """The tagger's nominal performance and the sanity gates' outcome (see sanity.py)."""
        inputs, _ = self.inputs("nominal")
        log_probs = self.log_probs("nominal")
        head = take(inputs, slice(0, SCORE_EVENTS), self.tagger.device)
        with self._model_errors(head), self.tagger.frozen():
            raw = self.tagger.raw_scores(head)
        bounds = self._sample("nominal").out_of_bounds  # warned about when read
        notes = [self._bounds_note("nominal", bounds)] if bounds else []
        nominal = assess(
            self.spec.model,
            log_probs,
            self.labels("nominal"),
            self.weights("nominal"),
            raw,
            notes,
        )
        explain = getattr(self.tagger, "explain_nonfinite", None)  # a backend's diagnosis
        bad = ~torch.isfinite(log_probs).all(dim=1)
        if explain is not None and bool(bad.any()):
            rows = torch.nonzero(bad.cpu()).flatten()[:512]
            with self._model_errors(head), self.tagger.frozen():
                cause = explain(take(inputs, rows, self.tagger.device), rows)
            if cause is not None:
                nominal.failures = [
                    (gate, f"{message}: {cause[0]}", cause[1])
                    if gate == "finite"
                    else (gate, message, fix)
                    for gate, message, fix in nominal.failures
                ]
        return nominal

    def sanity(self) -> Nominal:
        """The sanity gates' outcome; raises SanityError when one fails."""
        nominal = self.nominal
        if not nominal.passed:
            raise SanityError.of(nominal, self.spec.path)
        return nominal

    def run_check(self, check: CheckSpec) -> CheckResult:
        """Run one check of this spec, and its regression test when it asks for one.

        The spec's sanity gates run first: a gate that fails raises SanityError.
        """
        nominal = self.sanity()
        implementation = registry.checks()[check.type].load()
        result = implementation(check, self).evaluate()
        result.details.extend(nominal.details())
        if self._trim_note:
            result.details.append(self._trim_note)
        if getattr(self.tagger, "compiled", False):
            result.details.append("model run compiled (torch.compile: [model] compile = true)")
        result.nominal = nominal.to_dict()
        if self.record_to is not None:
            self.record_to.add(self.spec, check, copy.deepcopy(result), self.model_digest)
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
        return self._baseline.compare(self.spec, check, result)

    @cached_property
    def model_digest(self) -> str:
        """The model file's hash (for an import path: its weights, else its module source)."""
        spec = self.spec
        path = spec.model_path()
        if path is not None:
            return model_file_digest(path)  # with an ONNX model's external data files
        if spec.model.weights:
            return file_digest(spec.base_dir / spec.model.weights)
        source = self.tagger.source_file()
        return file_digest(source) if source is not None else json_digest(spec.model.path)

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
