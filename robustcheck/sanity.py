"""Sanity gates: what must hold of the model and the nominal sample before any figure counts.

A fooling rate of a tagger at chance, or of a model that gives NaN, is 0 and means nothing.
The gates run once per spec, before its first check; a gate that fails fails every check of
the spec with one message (never a pass):

- ``finite``: every class score of every nominal event is finite (never skipped);
- ``scores``: declared ``probabilities`` are non-negative and sum to 1 per event, ``sigmoid``
  outputs lie in [0, 1] (``logits`` that look like probabilities get a warning), and the
  scores of most events are not saturated (a class probability that underflows to 0 in
  float32 gives no gradient: inputs in the wrong units do this);
- ``classes``: every class the model gives occurs among the nominal labels;
- ``auc``: the nominal AUC (signal class against the rest) is significantly above 0.5, and
  reaches ``[model] min_auc`` when set;
- ``accuracy``: the decision (argmax) beats a decision that ignores the inputs: its balanced
  accuracy (mean recall over classes) is significantly above 1 / classes, and its accuracy
  reaches ``[model] min_accuracy`` when set.

"Significantly" is one-sided at ``GATE_Z`` standard errors. ``[model] skip_gates`` switches a
gate off; every verdict of the spec then names the gates skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustcheck.envelope import Envelope, Inputs
from robustcheck.errors import RobustcheckError
from robustcheck.spec import ModelSpec
from robustcheck.stats import auc, auc_standard_error, effective_count

GATE_Z = 3.0  # one-sided: a tagger at chance passes the AUC gate with probability 0.13%
SUM_TOLERANCE = 1e-3  # how far probabilities may sum from 1 (float32 softmax: ~1e-6)
SCORE_EVENTS = 10_000  # nominal events whose raw outputs the scores gate reads
EXAMPLES = 3  # events or features named in a message
# a class log-probability below this underflows to probability 0 in float32 (smallest normal
# 1.2e-38): the softmax is saturated and gives no gradient
SATURATED_LOG_PROB = -87.3
SATURATED_FAIL = 0.5  # fraction of saturated events that fails the scores gate
SATURATED_WARN = 0.01  # ... and that gets a warning


@dataclass
class Nominal:
    """The tagger's performance on the nominal sample and the gates' outcome."""

    n_events: int
    classes: int
    signal_class: int
    auc: float | None
    auc_error: float | None
    accuracy: float
    balanced_accuracy: float
    majority_rate: float
    skipped_gates: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # gate, message, fix

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """One line for summaries: AUC, accuracy and the majority-class rate."""
        if self.auc is None:
            area = "AUC undefined (one class)"
        else:
            area = f"AUC {self.auc:.3f} ± {self.auc_error or 0.0:.3f}"
        return (
            f"nominal {area}, accuracy {self.accuracy:.3f} (majority class "
            f"{self.majority_rate:.3f}), {self.n_events:,} events"
        )

    def details(self) -> list[str]:
        """What every verdict of the spec must say: gates skipped, and the warnings."""
        out = [f"sanity gate warning: {text}" for text in self.warnings]
        if self.skipped_gates:
            out.append(
                "sanity gates skipped ([model] skip_gates): " + ", ".join(self.skipped_gates)
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "auc_error": self.auc_error,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "majority_rate": self.majority_rate,
            "n_events": self.n_events,
            "classes": self.classes,
            "signal_class": self.signal_class,
            "skipped_gates": list(self.skipped_gates),
            "warnings": list(self.warnings),
            "failures": [message for _, message, _ in self.failures],
        }


def assess(
    model: ModelSpec,
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    weights: np.ndarray | None,
    raw_scores: torch.Tensor | None,
    warnings: list[str] | None = None,
) -> Nominal:
    """Run every gate on the nominal sample's class log-probabilities and labels.

    ``raw_scores`` are the model's selected outputs (before they are turned into
    probabilities) for some of the events, or None when the backend cannot give them.
    """
    skip = set(model.skip_gates)  # grows when a failed gate makes the later ones moot
    lp = log_probs.detach().cpu()  # no float64 copy of every event (streamed samples are large)
    y = labels.cpu().numpy().astype(np.int64, copy=False)
    n, classes = lp.shape
    failures: list[tuple[str, str, str]] = []
    notes = list(warnings or [])

    finite = torch.isfinite(lp).all(dim=1).numpy()
    if not finite.all():
        bad = np.flatnonzero(~finite)
        failures.append(
            (
                "finite",
                f"the model gives NaN or infinite scores for {len(bad):,} of {n:,} nominal "
                f"events (events {_examples(bad)})",
                "check the inputs' units and scaling and the model export; no figure of a "
                "model that gives NaN means anything",
            )
        )
        lp = torch.nan_to_num(lp, nan=-math.inf)
        skip |= {"scores", "classes", "auc", "accuracy"}  # figures of NaN say nothing more
    decisions = np.empty(n, dtype=np.int16 if classes < 2**15 else np.int64)
    for part in _blocks(n):
        decisions[part] = lp[part].argmax(dim=1).numpy()
    counts = np.bincount(y, minlength=classes)
    majority = float(counts.max() / n) if n else 0.0
    accuracy = float((decisions == y).mean()) if n else 0.0
    balanced, balanced_error = _balanced_accuracy(decisions, y, classes)

    if raw_scores is not None and "scores" not in skip:
        problem, note = _score_gate(raw_scores, model.scores)
        if problem:
            failures.append(("scores", *problem))
        if note:
            notes.append(note)
    if "scores" not in skip and n:
        saturated = sum(
            int((lp[part].min(dim=1).values < SATURATED_LOG_PROB).sum()) for part in _blocks(n)
        )
        text = (
            f"the scores of {saturated:,} of {n:,} nominal events are saturated (a class "
            "probability below 1e-38 underflows to 0 in float32, and no gradient moves them)"
        )
        if saturated > SATURATED_FAIL * n:
            failures.append(
                (
                    "scores",
                    text,
                    "check the inputs' units and scale (the model's own normalisation "
                    "expects what it was trained on)",
                )
            )
        elif saturated > SATURATED_WARN * n:
            notes.append(text)
    if "classes" not in skip:
        missing = [k for k in range(classes) if counts[k] == 0]
        if missing:
            failures.append(
                (
                    "classes",
                    f"the model gives {classes} classes, but class(es) {missing} never occur "
                    f"among the nominal labels (classes present: "
                    f"{[k for k in range(classes) if counts[k]]})",
                    "check [model] output, scores and signal_class and [data.nominal] labels; "
                    'if the model\'s extra classes are expected here, skip_gates = ["classes"]',
                )
            )

    area = error = None
    is_signal = y == model.signal_class
    if 0 < is_signal.sum() < n and bool(finite.all()):
        area = auc(is_signal, _log_odds(lp, model.signal_class), weights)
        sig = is_signal
        n_signal = effective_count(None if weights is None else weights[sig], int(sig.sum()))
        n_background = effective_count(
            None if weights is None else weights[~sig], int((~sig).sum())
        )
        if n_signal > 0 and n_background > 0:
            error = auc_standard_error(area, n_signal, n_background)
        else:
            area = None
    if "auc" not in skip:
        failures += _auc_gate(area, error, model, n, is_signal)
    if "accuracy" not in skip:
        failures += _accuracy_gate(
            decisions, accuracy, balanced, balanced_error, classes, model.min_accuracy
        )
    if accuracy < majority and "accuracy" not in skip and not failures:
        notes.append(
            f"the accuracy of the decision ({accuracy:.3f}) is below the majority-class rate "
            f"({majority:.3f}): the argmax threshold does not suit this sample's class mix; "
            "fooling rates count only the correctly classified events"
        )
    return Nominal(
        n_events=n,
        classes=classes,
        signal_class=model.signal_class,
        auc=area,
        auc_error=error,
        accuracy=accuracy,
        balanced_accuracy=balanced,
        majority_rate=majority,
        skipped_gates=model.skip_gates,
        warnings=notes,
        failures=failures,
    )


# events per block of the per-event arithmetic (gates, out-of-bounds counts): the temporaries
# of a block, not of the whole sample
EVENT_BLOCK = 65_536


def _blocks(n: int) -> list[slice]:
    return [slice(start, min(start + EVENT_BLOCK, n)) for start in range(0, n, EVENT_BLOCK)]


def _log_odds(lp: torch.Tensor, signal_class: int) -> np.ndarray:
    """Per event, the log odds of the signal class in float64 (the order of its probability
    without the rounding of probabilities near 1), block by block."""
    out = np.empty(len(lp))
    for part in _blocks(len(lp)):
        block = lp[part].double()
        others = torch.cat([block[:, :signal_class], block[:, signal_class + 1 :]], 1)
        out[part] = (block[:, signal_class] - torch.logsumexp(others, dim=1)).numpy()
    return out


def _examples(index: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in index[:EXAMPLES])
    return shown + (", ..." if len(index) > EXAMPLES else "")


def _score_gate(raw: torch.Tensor, kind: str) -> tuple[tuple[str, str] | None, str | None]:
    """(message, fix) when the raw outputs contradict ``kind``; a warning when they only
    look like another kind."""
    z = raw.detach().double().cpu().reshape(raw.shape[0], -1)
    z = z[torch.isfinite(z).all(dim=1)]  # the finite gate speaks of the others
    if not len(z):
        return None, None
    low, high = float(z.min()), float(z.max())
    if kind == "probabilities":
        sums = z.sum(dim=1)
        off = ((sums - 1).abs() > SUM_TOLERANCE).numpy()
        if low < -SUM_TOLERANCE or off.any():
            worst = int((sums - 1).abs().argmax())
            return (
                (
                    'scores = "probabilities", but the outputs are not probabilities: '
                    f"values from {low:.4g} to {high:.4g}, and {int(off.sum()):,} of {len(z):,} "
                    f"events do not sum to 1 (event {worst} sums to {float(sums[worst]):.4g})",
                    'use scores = "logits" when the model returns unnormalised scores',
                ),
                None,
            )
        return None, None
    if kind == "sigmoid":
        if low < 0.0 or high > 1.0:
            return (
                (
                    f'scores = "sigmoid", but the outputs range from {low:.4g} to {high:.4g}, '
                    "outside [0, 1]",
                    'use scores = "binary_logit" when the model returns a raw logit',
                ),
                None,
            )
        return None, None
    if low >= 0.0 and high <= 1.0:
        if (
            kind == "logits"
            and z.shape[1] > 1
            and bool(((z.sum(dim=1) - 1).abs() <= SUM_TOLERANCE).all())
        ):
            return None, (
                'scores = "logits", but every output is non-negative and sums to 1 per event: '
                'if the model returns probabilities, set scores = "probabilities" (a softmax '
                "of probabilities changes every figure)"
            )
        if kind == "binary_logit":
            return None, (
                'scores = "binary_logit", but every output lies in [0, 1]: if the model returns '
                'a probability, set scores = "sigmoid"'
            )
    return None, None


def _balanced_accuracy(decisions: np.ndarray, y: np.ndarray, classes: int) -> tuple[float, float]:
    """Mean recall over the classes present, and its standard error under the null of a
    decision that ignores the inputs (each class decided at the observed rates)."""
    present = [k for k in range(classes) if (y == k).any()]
    if not present:
        return 0.0, 0.0
    recall = [float((decisions[y == k] == k).mean()) for k in present]
    rates = np.bincount(decisions, minlength=classes) / len(decisions)
    variance = sum(rates[k] * (1 - rates[k]) / (y == k).sum() for k in present)
    return float(np.mean(recall)), math.sqrt(variance) / len(present)


def _auc_gate(
    area: float | None, error: float | None, model: ModelSpec, n: int, is_signal: np.ndarray
) -> list[tuple[str, str, str]]:
    fix = (
        "check that [inputs.*] features are listed in the order the model was trained on, "
        "and [data.nominal] labels and [model] signal_class"
    )
    if area is None or error is None:
        present = "signal" if is_signal.any() else "background"
        return [
            (
                "auc",
                f"the nominal sample holds only {present} events (signal class "
                f"{model.signal_class}): the tagger's AUC is undefined",
                "use a nominal sample with both signal and background events",
            )
        ]
    out = []
    needed = 0.5 + GATE_Z * error
    if area <= needed:
        out.append(
            (
                "auc",
                f"the nominal AUC is {area:.3f} ± {error:.3f} (signal class {model.signal_class} "
                f"against the rest, {n:,} events): not significantly above 0.5 (needs more than "
                f"0.5 + {GATE_Z:g} sigma = {needed:.3f}); the tagger is at chance on this data",
                fix,
            )
        )
    elif model.min_auc is not None and area < model.min_auc:
        out.append(
            (
                "auc",
                f"the nominal AUC is {area:.3f} ± {error:.3f}, below [model] min_auc "
                f"{model.min_auc:g}",
                fix,
            )
        )
    return out


def _accuracy_gate(
    decisions: np.ndarray,
    accuracy: float,
    balanced: float,
    error: float,
    classes: int,
    minimum: float | None,
) -> list[tuple[str, str, str]]:
    fix = (
        "check the feature order of [inputs.*], the labels, [model] scores and output; a "
        "decision that ignores the inputs makes every fooling rate meaningless"
    )
    chance = 1.0 / classes
    decided = np.unique(decisions)
    if len(decided) == 1:
        return [
            (
                "accuracy",
                f"the decision (argmax) gives every nominal event class {int(decided[0])} "
                f"(accuracy {accuracy:.3f})",
                fix,
            )
        ]
    if error <= 0 or (balanced - chance) / error <= GATE_Z:
        return [
            (
                "accuracy",
                f"the decision's balanced accuracy {balanced:.3f} ± {error:.3f} is not "
                f"significantly above {chance:.3f}, what a decision that ignores the inputs "
                f"gets (accuracy {accuracy:.3f})",
                fix,
            )
        ]
    if minimum is not None and accuracy < minimum:
        return [
            (
                "accuracy",
                f"the decision's accuracy {accuracy:.3f} is below [model] min_accuracy {minimum:g}",
                fix,
            )
        ]
    return []


def out_of_bounds(envelope: Envelope, inputs: Inputs) -> dict[tuple[str, str], tuple[int, float]]:
    """(input, feature) -> (count, most extreme value) of real entries outside the envelope's
    min/max; padding and ``default`` placeholders are left out. The most extreme value is the
    smallest when some entry lies below min, else the largest."""
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for name, env in envelope.inputs.items():
        bounded = torch.isfinite(env.lower) | torch.isfinite(env.upper)
        if not bool(bounded.any()):
            continue
        x = inputs[name]
        n_features = x.shape[-1]
        counts = torch.zeros(n_features, dtype=torch.int64)
        smallest = torch.full((n_features,), math.inf, dtype=torch.float64)
        largest = torch.full((n_features,), -math.inf, dtype=torch.float64)
        below_min = torch.zeros(n_features, dtype=torch.bool)
        for part in _blocks(len(x)):
            block = x[part]
            real = block != env.default
            if env.mask is not None:
                mask = inputs[env.mask][part]
                real = real & (mask != 0).unsqueeze(-1)
            outside = (((block < env.lower) | (block > env.upper)) & real).reshape(-1, n_features)
            counts += outside.sum(dim=0)
            flat = block.reshape(-1, n_features)
            for column in torch.nonzero(outside.any(dim=0)).flatten().tolist():
                values = flat[:, column][outside[:, column]]
                below_min[column] |= bool((values < env.lower[column]).any())
                smallest[column] = min(float(smallest[column]), float(values.min()))
                largest[column] = max(float(largest[column]), float(values.max()))
        for column in torch.nonzero(counts).flatten().tolist():
            extreme = smallest[column] if bool(below_min[column]) else largest[column]
            out[(name, env.features[column])] = (int(counts[column]), float(extreme))
    return out


def merge_bounds(
    total: dict[tuple[str, str], tuple[int, float]],
    more: dict[tuple[str, str], tuple[int, float]],
) -> None:
    """Add one chunk's ``out_of_bounds`` counts to ``total``."""
    for key, (count, extreme) in more.items():
        old_count, old_extreme = total.get(key, (0, extreme))
        worst = extreme if abs(extreme) >= abs(old_extreme) else old_extreme
        total[key] = (old_count + count, worst)


def bounds_message(
    counts: dict[tuple[str, str], tuple[int, float]], envelope: Envelope, single_input: bool
) -> str:
    """``N entries outside the envelope's bounds: jet_mass 12 (min 0, down to -3.1), ...``."""
    parts = []
    for (name, feature), (count, extreme) in sorted(counts.items(), key=lambda kv: -kv[1][0]):
        env = envelope.inputs[name]
        column = env.features.index(feature)
        low, high = float(env.lower[column]), float(env.upper[column])
        unit = f" {env.unit(column)}" if env.unit(column) else ""
        bounds = ", ".join(
            text
            for text, value in ((f"min {low:g}{unit}", low), (f"max {high:g}{unit}", high))
            if math.isfinite(value)
        )
        label = feature if single_input else f"{name}.{feature}"
        parts.append(f"{label} {count:,} ({bounds}; extreme value {extreme:.4g}{unit})")
    total = sum(count for count, _ in counts.values())
    return f"{total:,} entries lie outside the envelope's bounds: " + "; ".join(parts)


class SanityError(RobustcheckError):
    """A sanity gate failed: the model or the nominal sample makes every figure meaningless."""

    kind = "sanity gate"

    @classmethod
    def of(cls, nominal: Nominal, spec_file: str | Path) -> SanityError:
        """One error for all the gates that failed, with each one's fix."""
        failures = nominal.failures
        if len(failures) == 1:
            gate, message, fix = failures[0]
            text = f"{gate}: {message}"
        else:
            text = f"{len(failures)} sanity gates failed:" + "".join(
                f"\n  - {gate}: {message} (fix: {fix})" for gate, message, fix in failures
            )
            fix = "each gate's fix above"
        error = cls(
            f"{text}\n  ({nominal.line()}; no check of this spec can pass until this is fixed)",
            file=spec_file,
            field="model",
            fix=fix,
        )
        error.nominal = nominal.to_dict()
        return error
