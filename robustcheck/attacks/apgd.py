"""APGD: auto-PGD with an adaptive step size, momentum and checkpoints (Croce & Hein 2020,
arXiv:2003.01690), in the epsilon-sigma box every attack shares.

Per event the step starts at ``2 * epsilon`` sigma. Each iteration takes a signed-gradient
step, mixes it with the previous move (momentum 0.75) and projects onto the box
(``Box.project_``: bounds, frozen and padded entries, correlated-group ellipsoids); steps are
scaled by ``box.unit``, so entries that may not move never do. At checkpoints after 22%, then
shrinking shares of the steps, an event whose loss rose in at most 75% of the steps since the
last checkpoint, or whose best loss did not improve (and whose step was not halved at the last
checkpoint), halves its step and restarts from its best point. Every quantity is per event and
every decision a ``torch.where``: no host sync per step; the checkpoints are fixed iterations.

Losses: ``ce`` (the decision's negative log-likelihood) or ``margin``: the distance to the
decision boundary in log-odds, positive once fooled. For an argmax decision that is the
difference of logits, ``max_{j != y} z_j - z_y`` (the DLR idea for taggers of two classes,
where DLR itself is undefined); for a working-point threshold ``t`` on the signal probability
it is ``+-(logit p_signal - logit t)``. The margin does not saturate where a confident
softmax makes the cross entropy's gradient underflow to zero in float32.

An event stops moving as soon as its decision flips (its fooling point is kept) and, as in
PGD, fooled events leave the batch every ``COMPACT_EVERY`` steps once they are at least
``COMPACT_SHARE`` of it. ``restarts`` runs the search again on the events still not fooled,
from a random point of the box; the first run starts at the nominal point unless
``random_start``. Without early stopping (an AUC under attack), every restart runs on every
event and each keeps its point of largest loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from robustcheck.attacks.base import Attack, AttackBatch
from robustcheck.decision import Decision
from robustcheck.envelope import Inputs
from robustcheck.spec import AttackSpec

MOMENTUM = 0.75  # weight of the new step; 1 - MOMENTUM goes to the previous move
OSCILLATION = 0.75  # a checkpoint halves the step when the loss rose in at most this share
FIRST_CHECKPOINT, MIN_INTERVAL, INTERVAL_DECREASE = 0.22, 0.06, 0.03


def margin_loss(decision: Decision, log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per event, how far past its decision boundary an event is, in log-odds (> 0: fooled).

    Argmax: the largest other class's log-probability minus the target's (a difference of
    logits). Threshold ``t`` on the signal probability: ``logit p_signal - logit t`` for a
    target of background (0), its negative for signal (1).
    """
    if decision.threshold is None:
        target_score = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
        if log_probs.shape[1] == 2:  # the other class
            return log_probs.gather(1, (1 - target).unsqueeze(1)).squeeze(1) - target_score
        others = log_probs.scatter(1, target.unsqueeze(1), -math.inf)
        return others.max(dim=1).values - target_score
    signal = decision.signal_class
    log_signal = log_probs[:, signal]
    keep = torch.ones(log_probs.shape[1], dtype=torch.bool, device=log_probs.device)
    keep[signal] = False
    log_other = torch.logsumexp(log_probs[:, keep], dim=1)  # log(1 - p) without cancellation
    t = decision.threshold
    log_odds = log_signal - log_other - math.log(t / (1 - t))
    return torch.where(target.bool(), -log_odds, log_odds)


def checkpoints(steps: int) -> list[int]:
    """The iterations (1-based) after which the step-size conditions are tested."""
    interval = max(int(FIRST_CHECKPOINT * steps), 1)
    shortest = max(int(MIN_INTERVAL * steps), 1)
    decrease = max(int(INTERVAL_DECREASE * steps), 1)
    out, at = [], interval
    while at <= steps:
        out.append(at)
        interval = max(interval - decrease, shortest)
        at += interval
    return out


def _per_event(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(events,) values shaped to broadcast over an input of shape (events, ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class _Search:
    """The per-event state of one APGD run; every tensor's first axis is the event."""

    x: Inputs  # current point
    previous: Inputs  # point before it (for the momentum)
    best: Inputs  # point of largest loss so far
    grad: list[torch.Tensor]  # gradient at x
    grad_best: list[torch.Tensor]  # gradient at best
    loss: torch.Tensor
    loss_best: torch.Tensor
    loss_at_check: torch.Tensor  # loss_best at the last checkpoint
    step: torch.Tensor  # step size in sigma units
    rises: torch.Tensor  # steps since the last checkpoint whose loss rose
    halved: torch.Tensor  # the step was halved at the last checkpoint
    done: torch.Tensor  # fooled: frozen at its fooling point (early stopping)

    def take(self, rows: torch.Tensor) -> _Search:
        def pick(value: object) -> object:
            if isinstance(value, dict):
                return {name: x[rows] for name, x in value.items()}
            if isinstance(value, list):
                return [x[rows] for x in value]
            assert isinstance(value, torch.Tensor)
            return value[rows]

        return _Search(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})


class APGD(Attack):
    COMPACT_SHARE = 1 / 32
    COMPACT_EVERY = 5

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        super().__init__(spec, seed)
        options = spec.options
        self.steps = int(options["steps"])
        self.restarts = int(options["restarts"])
        self.loss_name = str(options["loss"])
        self.random_start = bool(options["random_start"])

    @property
    def uses_seed(self) -> bool:
        """Random points start the restarts after the first (and the first with
        ``random_start``)."""
        return self.random_start or self.restarts > 1

    def describe(self) -> str:
        restarts = f", {self.restarts} restarts" if self.restarts > 1 else ""
        start = ", random start" if self.random_start else ""
        return (
            f"apgd eps={self.epsilon:g} sigma, {self.steps} steps, {self.loss_name} loss"
            f"{restarts}{start}, {self.seed_note()}"
        )

    def event_loss(self, batch: AttackBatch, log_probs: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "margin":
            return margin_loss(batch.decision, log_probs, batch.target)
        return batch.decision.event_loss(log_probs, batch.target)

    def perturb(self, batch: AttackBatch) -> Inputs:
        out = {name: batch.nominal[name].clone() for name in batch.box.unit}
        everyone = torch.arange(len(batch.target), device=batch.target.device)
        best_loss = torch.full((len(everyone),), -math.inf, device=batch.target.device)
        open_rows = everyone
        for restart in range(self.restarts):
            if batch.early_stop and restart > 0:
                open_rows = everyone[~batch.fooled(out)]  # one host sync per restart
                if not len(open_rows):
                    break
            sub = batch if len(open_rows) == len(everyone) else batch.subset(open_rows)
            sub = sub.fork(f"restart {restart}")
            random = self.random_start or restart > 0
            points, loss = self._search(sub, random)
            if batch.early_stop:
                for name, x in points.items():
                    out[name][open_rows] = x
                continue
            better = loss > best_loss  # without early stopping: keep each event's worst case
            best_loss = torch.maximum(best_loss, loss)
            for name, x in points.items():
                out[name] = torch.where(_per_event(better, x), x, out[name])
        return out

    def _evaluate(
        self, batch: AttackBatch, x: Inputs, with_grad: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Per-event loss, its input gradients (empty without ``with_grad``) and which fool."""
        if not with_grad:
            with torch.no_grad():
                log_probs = batch.tagger.log_probs({**batch.nominal, **x})
                loss = self.event_loss(batch, log_probs)
            return loss, [], batch.decision.decide(log_probs) != batch.target
        leaves = {name: v.detach().requires_grad_(True) for name, v in x.items()}
        log_probs = batch.tagger.log_probs({**batch.nominal, **leaves})
        loss = self.event_loss(batch, log_probs)
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        fooled = batch.decision.decide(log_probs.detach()) != batch.target
        return loss.detach(), list(grads), fooled

    @torch.no_grad()
    def _start(self, batch: AttackBatch, random: bool) -> Inputs:
        x = {name: batch.nominal[name].clone() for name in batch.box.unit}
        if random:
            for name, v in x.items():
                noise = batch.random.uniform_like(v)
                v.add_(noise.mul_(2).sub_(1).mul_(self.epsilon).mul_(batch.box.unit[name]))
            batch.box.project_(x)
        return x

    def _search(self, batch: AttackBatch, random: bool) -> tuple[Inputs, torch.Tensor]:
        """One APGD run: each event's fooling point (else its point of largest loss), and
        the loss there."""
        x = self._start(batch, random)
        loss, grad, fooled = self._evaluate(batch, x, with_grad=self.steps > 0)
        n = len(loss)
        no = torch.zeros(n, dtype=torch.bool, device=loss.device)
        done = fooled if batch.early_stop else no
        state = _Search(
            x=x,
            previous={name: v.clone() for name, v in x.items()},
            best={name: v.clone() for name, v in x.items()},
            grad=grad,
            grad_best=[g.clone() for g in grad],
            loss=loss,
            loss_best=loss.clone(),
            loss_at_check=loss.clone(),
            step=torch.full_like(loss, 2.0 * self.epsilon),
            rises=torch.zeros_like(loss),
            halved=no.clone(),
            done=done,
        )
        out = {name: v.clone() for name, v in x.items()}
        out_loss = loss.clone()
        rows = torch.arange(n, device=loss.device)
        checks = set(checkpoints(self.steps))
        last_check = 0
        compact = batch.early_stop
        for it in range(1, self.steps + 1):
            if compact and it % self.COMPACT_EVERY == 0:
                n_done = int(state.done.sum())  # one host sync every COMPACT_EVERY steps
                if n_done >= self.COMPACT_SHARE * len(state.done):
                    self._store(out, out_loss, rows, state)
                    keep = torch.nonzero(~state.done).flatten()
                    if not len(keep):
                        return out, out_loss
                    rows, batch, state = rows[keep], batch.subset(keep), state.take(keep)
            self._move(batch, state, first=it == 1)
            loss, grad, fooled = self._evaluate(batch, state.x, with_grad=it < self.steps)
            self._update(state, loss, grad, fooled, batch.early_stop)
            if it in checks:
                self._checkpoint(state, it - last_check)
                last_check = it
        self._store(out, out_loss, rows, state)
        return out, out_loss

    @torch.no_grad()
    def _move(self, batch: AttackBatch, state: _Search, first: bool) -> None:
        """One signed-gradient step with momentum, projected; done events keep their point."""
        box, moving = batch.box, ~state.done
        z = {}
        for (name, x), g in zip(state.x.items(), state.grad, strict=True):
            step = _per_event(state.step, x) * box.unit[name]
            z[name] = x + step * g.sign()
        box.project_(z)
        if not first:
            for name, x in state.x.items():
                z[name] = x + MOMENTUM * (z[name] - x) + (1 - MOMENTUM) * (x - state.previous[name])
            box.project_(z)
        for name, x in state.x.items():
            keep = _per_event(moving, x)
            state.previous[name] = torch.where(keep, x, state.previous[name])
            state.x[name] = torch.where(keep, z[name], x)

    @torch.no_grad()
    def _update(
        self,
        state: _Search,
        loss: torch.Tensor,
        grad: list[torch.Tensor],
        fooled: torch.Tensor,
        early_stop: bool,
    ) -> None:
        """Record the new point's loss; keep the best point and its gradient; stop the fooled."""
        moving = ~state.done
        loss = torch.where(moving, loss, state.loss)
        state.rises += (moving & (loss > state.loss)).to(state.rises.dtype)
        state.loss = loss
        better = moving & (loss > state.loss_best)
        if early_stop:
            # a fooling point is the answer even where the loss is not the largest (ce with
            # many classes); it becomes the best point so that it is the one kept
            better = better | (moving & fooled)
            state.done = state.done | fooled
        state.loss_best = torch.where(better, loss, state.loss_best)
        for name, x in state.x.items():
            state.best[name] = torch.where(_per_event(better, x), x, state.best[name])
        for i, g in enumerate(grad):
            state.grad[i] = g
            state.grad_best[i] = torch.where(_per_event(better, g), g, state.grad_best[i])

    @torch.no_grad()
    def _checkpoint(self, state: _Search, interval: int) -> None:
        """Halve the step and go back to the best point where the search stalls or oscillates."""
        oscillating = state.rises <= OSCILLATION * interval
        stalled = ~state.halved & (state.loss_best <= state.loss_at_check)
        halve = (oscillating | stalled) & ~state.done
        state.step = torch.where(halve, state.step / 2, state.step)
        for name, x in state.x.items():
            state.x[name] = torch.where(_per_event(halve, x), state.best[name], x)
        for i, g in enumerate(state.grad):
            state.grad[i] = torch.where(_per_event(halve, g), state.grad_best[i], g)
        state.halved = halve
        state.loss_at_check = state.loss_best.clone()
        state.rises = torch.zeros_like(state.rises)

    @staticmethod
    def _store(out: Inputs, out_loss: torch.Tensor, rows: torch.Tensor, state: _Search) -> None:
        for name, x in state.best.items():
            out[name][rows] = x
        out_loss[rows] = state.loss_best
