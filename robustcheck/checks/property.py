"""Check ``property``: no perturbation within epsilon sigma moves any event's score too far.

hypothesis searches for a perturbation that breaks the property and shrinks it towards "no
change". Each example is one pattern of pulls in [-1, 1] per feature (per particle and feature
for particle inputs) applied to every tested event, each scaled to its own envelope box, so
every event meets every pattern and one batched pass over the sample tests one pattern. The
shrunk pattern is then scaled down by bisection to the smallest fraction that still fails, and
reported for one event: each changed feature as nominal -> perturbed value, in physical units
and in sigma, and the change of the score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from robustcheck.checks.base import Check
from robustcheck.decision import Decision
from robustcheck.engine import batches, take
from robustcheck.envelope import Box, Envelope, Inputs
from robustcheck.errors import SpecError
from robustcheck.result import CheckResult
from robustcheck.strategies import SearchOutcome, database_key, perturb, pulls, search
from robustcheck.taggers.base import Tagger

EVAL_BATCH = 8192
BISECTION_STEPS = 12
MAX_LINES = 12

Pattern = Mapping[str, np.ndarray]


@dataclass
class Outcome:
    """Every tested event under one pattern of pulls."""

    moved: Inputs
    score_change: torch.Tensor
    decided: torch.Tensor
    flipped: torch.Tensor
    broken: torch.Tensor


class Probe:
    """Scores the tested events under a pattern of pulls and finds which break the property."""

    def __init__(
        self,
        tagger: Tagger,
        nominal: Inputs,
        box: Box,
        decision: Decision,
        max_score_change: float | None,
        decision_unchanged: bool,
    ) -> None:
        self.tagger = tagger
        self.nominal = nominal
        self.box = box
        self.decision = decision
        self.limit = max_score_change
        self.decision_unchanged = decision_unchanged
        self.examples = 0
        self.largest_change = 0.0
        log_probs = self.log_probs(nominal)  # the same batches as every perturbed pass
        self.score = log_probs[:, decision.signal_class].exp()
        self.decided = decision.decide(log_probs)

    def log_probs(self, inputs: Inputs) -> torch.Tensor:
        n = len(next(iter(inputs.values())))
        return torch.cat(
            [
                self.tagger.evaluate({name: x[part] for name, x in inputs.items()})
                for part in batches(n, EVAL_BATCH)
            ]
        )

    def outcome(self, pattern: Pattern) -> Outcome:
        """How every tested event fares under ``pattern``."""
        moved = perturb(self.box, self.nominal, pattern)
        log_probs = self.log_probs({**self.nominal, **moved})
        change = log_probs[:, self.decision.signal_class].exp() - self.score
        decided = self.decision.decide(log_probs)
        flipped = decided != self.decided
        broken = torch.zeros_like(flipped)
        if self.limit is not None:
            broken |= change.abs() > self.limit
        if self.decision_unchanged:
            broken |= flipped
        return Outcome(moved, change, decided, flipped, broken)

    def fails(self, pattern: Pattern) -> bool:
        """The search's condition: some event breaks the property under ``pattern``."""
        self.examples += 1
        outcome = self.outcome(pattern)
        self.largest_change = max(self.largest_change, float(outcome.score_change.abs().max()))
        return bool(outcome.broken.any())

    def smallest(self, pattern: Pattern) -> dict[str, np.ndarray]:
        """The smallest fraction of a failing pattern that still fails (bisection)."""
        low, high = 0.0, 1.0
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            if bool(self.outcome(scaled(pattern, middle)).broken.any()):
                high = middle
            else:
                low = middle
        return scaled(pattern, high)


def scaled(pattern: Pattern, factor: float) -> dict[str, np.ndarray]:
    return {name: (u * np.float32(factor)).astype(np.float32) for name, u in pattern.items()}


def changed_entries(
    envelope: Envelope, nominal: Inputs, moved: Inputs, event: int
) -> list[tuple[str, float, float, float, str]]:
    """(entry label, nominal, perturbed, shift in sigma, " unit" or "") of every entry the
    pattern moved."""
    out = []
    several = len(envelope.inputs) > 1
    for name, env in envelope.inputs.items():
        x, y = nominal[name][event], moved[name][event]
        sigma = env.sigma(x)
        for index in torch.nonzero(x != y).tolist():
            *particle, feature = index
            label = env.features[feature]
            if particle:
                label += "[" + ", ".join(map(str, particle)) + "]"
            if several:
                label = f"{name}.{label}"
            entry = tuple(index)
            pull = float((y[entry] - x[entry]) / sigma[entry]) if sigma[entry] > 0 else 0.0
            unit = env.unit(feature)
            out.append((label, float(x[entry]), float(y[entry]), pull, f" {unit}" if unit else ""))
    return out


class Property(Check):
    """Fails with the shrunk counterexample when a perturbation breaks the property."""

    def evaluate(self) -> CheckResult:
        o = self.options
        limit = None if o["max_score_change"] is None else float(o["max_score_change"])
        keep_decision = bool(o["decision_unchanged"])
        where = f"checks[{self.spec.index}]"
        if limit is None and not keep_decision:
            raise SpecError(
                "decision_unchanged = false and no max_score_change: nothing could fail",
                file=self.run.spec.path,
                field=where,
                fix="set max_score_change = 0.05 (for example) or decision_unchanged = true",
            )
        epsilon = float(o["epsilon"])
        run = self.run
        seed = run.seed_override if run.seed_override is not None else o["seed"]
        inputs, labels = run.inputs("nominal")
        n = len(labels) if o["max_events"] is None else min(len(labels), int(o["max_events"]))
        if n == 0:
            return self.result(
                False, "the nominal sample has no events to test", figures={"n_events": 0}
            )
        decision = run.decision(o["working_point"])
        run.log_probs("nominal")  # model errors surface here, with their clear message
        tagger = run.tagger
        nominal = take(inputs, slice(0, n), tagger.device)
        envelope = run.envelope.to(tagger.device)
        shapes = {name: tuple(nominal[name].shape[1:]) for name in envelope.inputs}
        key = database_key(
            "property",
            str(run.spec.path),
            self.spec.name,
            epsilon,
            n,
            limit,
            keep_decision,
            sorted(shapes.items()),
            decision.key,
        )
        with tagger.frozen(), run._model_errors(nominal):
            probe = Probe(
                tagger, nominal, envelope.box(nominal, epsilon), decision, limit, keep_decision
            )
            try:
                found = search(
                    pulls(envelope, shapes),
                    probe.fails,
                    seed=seed,
                    max_examples=o["max_examples"],
                    key=key,
                )
            except TimeoutError as exc:
                raise SpecError(
                    str(exc),
                    file=run.spec.path,
                    field=f"{where}.max_events",
                    fix="test fewer events, or load a hypothesis profile with deadline=None",
                ) from None
            if found.example is None:
                return self._passed(probe, found, n, epsilon, limit)
            outcome = probe.outcome(probe.smallest(found.example))
        return self._failed(probe, found, envelope, outcome, n, epsilon, limit)

    def _figures(
        self, probe: Probe, found: SearchOutcome, n: int, epsilon: float, limit: float | None
    ) -> dict[str, float | int | str]:
        figures: dict[str, float | int | str] = {
            "n_events": n,
            "examples": probe.examples,
            "largest_score_change": probe.largest_change,
            "epsilon": epsilon,
            "seed": "" if found.seed is None else found.seed,
        }
        if limit is not None:
            figures["threshold"] = limit
        if probe.decision.threshold is not None:
            figures["decision_threshold"] = probe.decision.threshold
        return figures

    @staticmethod
    def _seeding(found: SearchOutcome) -> str:
        if found.seed is not None:
            return f"hypothesis seed {found.seed}"
        if found.settings.derandomize:
            return "hypothesis derandomized"
        if found.settings.database is None:
            return "hypothesis unseeded"
        return "hypothesis unseeded, failures replayed from its example database"

    def _search_line(self, probe: Probe, found: SearchOutcome) -> str:
        return (
            f"{self._seeding(found)}; max_examples {found.settings.max_examples}, "
            f"{probe.examples} perturbations evaluated, each one pattern of pulls applied to "
            "every event, scaled to its own box"
        )

    @staticmethod
    def _property(probe: Probe) -> str:
        parts = []
        if probe.limit is not None:
            parts.append(f"signal probability moves by more than {probe.limit:g}")
        if probe.decision_unchanged:
            parts.append(f"decision ({probe.decision.describe()}) changes")
        return " or ".join(parts)

    def _passed(
        self, probe: Probe, found: SearchOutcome, n: int, epsilon: float, limit: float | None
    ) -> CheckResult:
        summary = (
            f"no perturbation within {epsilon:g} sigma found for which any of {n:,} events' "
            f"{self._property(probe)} (largest score change "
            f"{probe.largest_change:.3g} over {probe.examples} perturbations) | "
            f"{self._seeding(found)}"
        )
        return self.result(
            True,
            summary,
            figures=self._figures(probe, found, n, epsilon, limit),
            details=[self._search_line(probe, found)],
        )

    def _failed(
        self,
        probe: Probe,
        found: SearchOutcome,
        envelope: Envelope,
        outcome: Outcome,
        n: int,
        epsilon: float,
        limit: float | None,
    ) -> CheckResult:
        change = outcome.score_change
        candidates = torch.nonzero(outcome.broken).flatten()
        if limit is not None:
            event = int(candidates[change[candidates].abs().argmax()])
        else:
            event = int(candidates[0])
        score0, delta = float(probe.score[event]), float(change[event])
        k = int(outcome.broken.sum())
        if limit is not None and abs(delta) > limit:
            what = f"signal probability of event {event} moves by {delta:+.3g} > max {limit:g}"
        else:
            what = (
                f"decision of event {event} changes from {int(probe.decided[event])} to "
                f"{int(outcome.decided[event])}"
            )
        summary = (
            f"{what} under a perturbation within {epsilon:g} sigma ({k:,} of {n:,} events "
            f"break the property under it) | {self._seeding(found)}"
        )
        entries = changed_entries(envelope, probe.nominal, outcome.moved, event)
        details = [f"shrunk counterexample, event {event} of the nominal sample:"]
        details += [
            f"  {label}: {x0:.6g}{unit} -> {x1:.6g}{unit} ({pull:+.3g} sigma)"
            for label, x0, x1, pull, unit in entries[:MAX_LINES]
        ]
        if len(entries) > MAX_LINES:
            details.append(f"  ... and {len(entries) - MAX_LINES} more changed entries")
        details.append(
            f"  signal probability: {score0:.4g} -> {score0 + delta:.4g} (change {delta:+.3g})"
        )
        details.append(self._search_line(probe, found))
        figures = self._figures(probe, found, n, epsilon, limit)
        figures.update(
            counterexample_event=event,
            counterexample_score_change=delta,
            counterexample_entries=len(entries),
            n_failing_events=k,
        )
        return self.result(False, summary, figures=figures, details=details)
