"""Decisions: argmax of the class scores, or a threshold on the signal probability."""

from __future__ import annotations

import math

import torch


class Decision:
    """Turns class log-probabilities into decisions and a loss an attack can maximise.

    With ``threshold`` None the decision is the argmax class. With a threshold the decision
    is binary: 1 when the signal probability reaches it (signal), 0 otherwise.
    """

    def __init__(self, signal_class: int = 1, threshold: float | None = None) -> None:
        self.signal_class = signal_class
        self.threshold = threshold

    @property
    def key(self) -> tuple[int, float | None]:
        return (self.signal_class, self.threshold)

    def describe(self) -> str:
        if self.threshold is None:
            return "argmax"
        return f"signal probability >= {self.threshold:.4g}"

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """The decision a correct classifier gives for these labels."""
        if self.threshold is None:
            return labels
        return (labels == self.signal_class).long()

    def decide(self, log_probs: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return log_probs.argmax(dim=1)
        return (log_probs[:, self.signal_class] >= math.log(self.threshold)).long()

    def event_loss(self, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-event negative log-likelihood of the correct decision (attacks maximise it)."""
        if self.threshold is None:
            return -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
        log_signal = log_probs[:, self.signal_class]
        log_other = torch.log1p(-log_signal.exp().clamp(max=1 - 1e-7))
        return -torch.where(target.bool(), log_signal, log_other)

    def loss(self, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The summed ``event_loss`` of a batch."""
        return self.event_loss(log_probs, target).sum()
