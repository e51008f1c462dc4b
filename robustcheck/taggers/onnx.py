"""Tagger backend: ONNX models, scored by onnxruntime.

Input gradients come from robustcheck's own interpreter of the same graph (``onnx_graph``:
the graph run node by node with torch operations, at its own opset, under autograd), which is
used only after it has been checked against onnxruntime on the spec's own data: scores,
finite input gradients, and finite differences of onnxruntime's scores on a few events. When
the ONNX file itself gives NaN (onnxruntime's scores, or the graph's own gradients), the
messages say so and name the first node that gives a non-finite value or derivative.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustcheck.errors import ModelError, exception_text
from robustcheck.taggers.base import (
    Inputs,
    Tagger,
    gradient_problem,
    select_output,
    to_log_probs,
)

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}

BRIDGE_ATOL = 1e-4
BRIDGE_RTOL = 1e-3
# The bridge's input gradients are checked against finite differences of onnxruntime's
# scores on a few events, along the gradient's own direction: the bridge predicts the change
# of the least likely class's log-probability over the (float32-rounded) step, and it must
# match within GRAD_RTOL at one step at least of a ladder of sizes relative to the spread of
# the inputs it moves (large steps meet curvature and kinks, small ones float32 rounding),
# in a central, forward or backward difference (at a kink one side keeps the gradient's piece).
GRAD_EVENTS = 4
GRAD_RTOL = 0.03
GRAD_STEPS = tuple(10.0 ** (-k / 2) for k in range(2, 13))  # 0.1 to 1e-6, x sqrt(10)
GRAD_MIN_PROB = 1e-5  # events whose least likely class is below this are saturated: skipped


EXPORT_FIX = "export the torch model (TorchScript or .pt2) for gradients"
BRIDGE = "the ONNX bridge (robustcheck's interpreter of the graph)"
# torch.onnx.export(dynamo=True) optimises the graph with onnxscript, whose rewrite rule
# ``x + 0 -> x`` matches any constant within 1e-8 of 0 (math.isclose, abs_tol=1e-8)
DROPPED_EPSILON = (
    "torch.onnx.export(dynamo=True) (torch's default exporter) removes the addition of a "
    "constant within 1e-8 of 0 (onnxscript's rewrite of `x + 0` into `x`), so a `+ 1e-8` "
    "written to keep a log, division or square root finite is not in the exported graph"
)
DROPPED_EPSILON_FIX = (
    "in the torch model write `x.clamp_min(1e-8)` (or add a constant above 1e-8) instead of "
    "`x + 1e-8` and re-export, or export with torch.onnx.export(..., dynamo=True, "
    "optimize=False) (or dynamo=False), which keeps the constant"
)
ZERO_SENSITIVE = ("(Log-", "(Div-", "(Sqrt-", "(Pow-", "(Reciprocal-")


class OnnxTagger(Tagger):
    """Scores from onnxruntime; input gradients through a verified interpreter of the graph."""

    backend = "onnx"

    def __init__(self, path: Path, input_names: list[str] | None = None, **kwargs: Any) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelError(
                "ONNX models need onnxruntime",
                file=path,
                field="model.path",
                fix='pip install "pytest-robustcheck[onnx]"',
            ) from None
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(
                f"onnxruntime cannot load the model: {exc}", file=path, field="model.path"
            ) from None
        graph_inputs = self.session.get_inputs()
        for node in graph_inputs:
            if node.shape and isinstance(node.shape[0], int) and node.shape[0] != -1:
                raise ModelError(
                    f"input `{node.name}` has a fixed batch size of {node.shape[0]}",
                    file=path,
                    field="model.path",
                    fix="export with a dynamic batch axis (dynamic_axes or dynamic_shapes)",
                )
        self.input_types = [_NUMPY_TYPES.get(node.type, np.float32) for node in graph_inputs]
        self.output_names = [node.name for node in self.session.get_outputs()]
        names = input_names or [node.name for node in graph_inputs]
        super().__init__(str(path), names, **kwargs)
        self.path = path
        self._bridge: torch.nn.Module | None = None
        self.bridge_error: str | None = None
        self.bridge_max_diff: float | None = None
        self.bridge_gradient_events: int | None = None  # events whose gradient was checked

    def evaluate(self, inputs: Inputs) -> torch.Tensor:
        return to_log_probs(self.raw_scores(inputs).float(), self.scores).to(self.device)

    def raw_scores(self, inputs: Inputs) -> torch.Tensor:
        """The selected output as onnxruntime computes it, on the CPU."""
        feed = {
            node.name: inputs[name].detach().cpu().numpy().astype(dtype, copy=False)
            for node, name, dtype in zip(
                self.session.get_inputs(), self.binding, self.input_types, strict=False
            )
        }
        try:
            raw = self.session.run(None, feed)
        except Exception as exc:
            shapes = {name: tuple(inputs[name].shape) for name in self.binding}
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"onnxruntime failed on inputs {shapes}: {first}",
                file=self.path,
                field="inputs",
                fix="check the feature count and the input order",
            ) from None
        return select_output([torch.from_numpy(r) for r in raw], self.output, self.output_names)

    @property
    def differentiable(self) -> bool:
        return self._bridge is not None

    def prepare_gradients(self, sample: Inputs) -> None:
        """Build the bridge and verify it against onnxruntime on ``sample``.

        Raises ModelError naming the reason when the bridge is unusable.
        """
        if self._bridge is not None:
            return
        from robustcheck.taggers.onnx_graph import NodeFailed

        module = self._convert().to(self.device)
        module.eval()
        try:
            self._verify(module, sample)
        except NodeFailed as exc:
            raise self._no_gradients(
                f"{BRIDGE} cannot run the model on the spec's data: {exc}"
            ) from None
        self._bridge = module

    def _verify(self, module: torch.nn.Module, sample: Inputs) -> None:
        """Raise ModelError when ``module`` disagrees with onnxruntime on ``sample`` or its
        input gradients are not finite or disagree with finite differences."""
        their_log_probs = self.evaluate(sample)
        with torch.no_grad():
            ours_log_probs = self._bridge_log_probs(module, sample)
        ours, theirs = torch.exp(ours_log_probs), torch.exp(their_log_probs)
        finite = torch.isfinite(theirs).all(dim=1)
        if not bool(finite.all()):
            ids = torch.arange(len(finite))
            raise self._no_gradients(*self._nonfinite_scores(module, sample, ~finite, ids))
        diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
        self.bridge_max_diff = diff
        if not torch.allclose(ours, theirs, atol=BRIDGE_ATOL, rtol=BRIDGE_RTOL):
            raise self._no_gradients(
                f"{BRIDGE} disagrees with onnxruntime by up to {diff:.3g} in class probability"
            )
        with torch.enable_grad():
            reason = gradient_problem(
                lambda inputs: self._bridge_log_probs(module, inputs), sample, finite=True
            )
        if reason is not None:
            where = self._locate(module, sample)
            fix = EXPORT_FIX
            if where and where.startswith("node") and any(op in where for op in ZERO_SENSITIVE):
                # the attack's error has a fix of its own: the remedy goes in the reason too
                where += (
                    f". If the model adds a small constant there: {DROPPED_EPSILON}; to keep "
                    f"it, {DROPPED_EPSILON_FIX}"
                )
                fix = DROPPED_EPSILON_FIX
            raise self._no_gradients(
                f"{BRIDGE} gives no usable gradients: {reason}"
                + (
                    f"; the ONNX graph itself is not differentiable there: {where}" if where else ""
                ),
                fix,
            )
        reason = self._gradient_disagreement(module, sample, their_log_probs)
        if reason is not None:
            raise self._no_gradients(
                f"{BRIDGE}'s input gradients disagree with finite differences of onnxruntime's "
                f"scores: {reason}"
            )

    def _locate(
        self, module: torch.nn.Module, sample: Inputs, ids: torch.Tensor | None = None
    ) -> str | None:
        """Where in the graph NaN or infinite values (or gradients) first appear."""
        from robustcheck.taggers.onnx_graph import OnnxGraph

        if not isinstance(module, OnnxGraph):
            return None
        inputs = tuple(sample[name] for name in self.binding)

        def loss(raw: Any) -> torch.Tensor:
            return to_log_probs(
                select_output(raw, self.output, self.output_names), self.scores
            ).sum()

        try:
            return module.locate_nonfinite(inputs, loss, ids)
        except Exception:  # a diagnosis only: the caller's message stands without it
            return None

    def _nonfinite_scores(
        self, module: torch.nn.Module, sample: Inputs, bad: torch.Tensor, ids: torch.Tensor
    ) -> tuple[str, str]:
        """The message and fix for NaN or infinite scores from onnxruntime on the events of
        ``sample`` that ``bad`` marks (``ids``: their numbers in the spec's sample): whether
        the graph itself computes them, and where."""
        rows = torch.nonzero(bad.cpu()).flatten()
        picked = {name: x[rows.to(x.device)] for name, x in sample.items()}
        ids = ids[rows]
        with torch.no_grad():
            ours = self._bridge_log_probs(module, picked)
        if bool(torch.isfinite(ours).all()):
            return (
                f"onnxruntime gives NaN or infinite scores for events {ids[:3].tolist()}, "
                f"where {BRIDGE} gives finite scores: onnxruntime's result is not the graph's",
                "report the model to onnxruntime; the scores are onnxruntime's",
            )
        text = (
            f"the ONNX file itself gives NaN or infinite scores (onnxruntime, and "
            f"robustcheck's interpreter of the same graph, for events {ids[:3].tolist()}): "
            "not a fault of robustcheck's gradient bridge"
        )
        where = self._locate(module, picked, ids)
        fix = "fix the model or its export so that its scores are finite on every event"
        if where:
            text += f"; the first non-finite value in the graph: {where}"
            if any(op in where for op in ZERO_SENSITIVE):
                text += f". If the model adds a small constant there: {DROPPED_EPSILON}"
                fix = DROPPED_EPSILON_FIX
        return text, fix

    def explain_nonfinite(self, sample: Inputs, ids: torch.Tensor) -> tuple[str, str] | None:
        """For the ``finite`` sanity gate: why onnxruntime's scores are NaN or infinite on
        ``sample`` (events ``ids`` of the spec's sample), and the fix; None when the graph
        cannot be run."""
        previous = self.bridge_error
        try:
            module = self._convert().to(self.device)
            bad = ~torch.isfinite(self.evaluate(sample)).all(dim=1)
            return self._nonfinite_scores(module, sample, bad, ids)
        except Exception:  # a diagnosis only: the gate's own message stands without it
            return None
        finally:
            self.bridge_error = previous  # the attacks build the bridge and name its error

    def _gradient_disagreement(
        self, module: torch.nn.Module, sample: Inputs, log_probs: torch.Tensor
    ) -> str | None:
        """Where the bridge's input gradient disagrees with a central difference of
        onnxruntime's scores (``log_probs`` on ``sample``), or None when it agrees on every
        event checked; sets ``bridge_gradient_events``."""
        # masks and flags (inputs of 0s and 1s only) are not moved: no attack moves them, and
        # a step off 0 or 1 crosses the graph's comparisons with them (mask == 0)
        names = [
            name
            for name in self.binding
            if sample[name].is_floating_point() and not _binary(sample[name])
        ]
        self.bridge_gradient_events = 0
        if not names:
            return None
        log_probs = log_probs.double().cpu()
        least = log_probs.argmin(dim=1)
        unsaturated = log_probs.gather(1, least[:, None])[:, 0].exp() >= GRAD_MIN_PROB
        events = torch.nonzero(unsaturated).flatten()[: 4 * GRAD_EVENTS]
        if not len(events):
            return None
        least = least[events]
        picked = {name: x.detach()[events.to(x.device)] for name, x in sample.items()}
        leaves = {
            name: x.clone().requires_grad_(True) if name in names else x
            for name, x in picked.items()
        }
        with torch.enable_grad():
            out = self._bridge_log_probs(module, leaves)
            chosen = out.gather(1, least[:, None].to(out.device)).sum()
            grads = torch.autograd.grad(chosen, [leaves[name] for name in names])
        n = len(events)
        grad = torch.cat([g.detach().double().cpu().reshape(n, -1) for g in grads], dim=1)
        norm = grad.norm(dim=1)
        keep = torch.nonzero(norm > 0).flatten()[:GRAD_EVENTS]  # no direction without a gradient
        if not len(keep):
            return None
        n, events, least, grad = len(keep), events[keep], least[keep], grad[keep]
        x = torch.cat(
            [
                picked[name][keep.to(picked[name].device)].double().cpu().reshape(n, -1)
                for name in names
            ],
            dim=1,
        )
        direction = grad / norm[keep, None]
        # the step scale: the spread over the sample of the entries the direction leans on
        # (their values where they do not vary, the event's inputs' size where all are 0)
        spread = torch.cat(
            [sample[name].detach().double().cpu().reshape(len(log_probs), -1) for name in names],
            dim=1,
        ).std(dim=0, correction=0)
        scale = (direction * spread).norm(dim=1)
        size = (direction * x).norm(dim=1)
        rms = x.pow(2).mean(dim=1).sqrt()
        scale = torch.where(scale > 0, scale, size)
        scale = torch.where(scale > 0, scale, torch.where(rms > 0, rms, torch.ones_like(rms)))
        steps = torch.tensor(GRAD_STEPS, dtype=torch.float64)
        # rows: step, then sign (+, -), then event
        offsets = steps[:, None, None] * torch.tensor([1.0, -1.0])[None, :, None] * scale
        moved = x[None, None] + offsets[..., None] * direction[None, None]
        feed: Inputs = {}
        start = 0
        rounded_parts = []
        for name in names:
            original = picked[name][keep.to(picked[name].device)]
            width = original[0].numel()
            part = moved[..., start : start + width].to(original.dtype)
            rounded_parts.append(part.double())
            feed[name] = part.reshape(-1, *original.shape[1:]).to(original.device)
            start += width
        for name in self.binding:
            if name not in names:
                original = picked[name][keep.to(picked[name].device)]
                feed[name] = original.repeat(len(GRAD_STEPS) * 2, *[1] * (original.dim() - 1))
        rounded = torch.cat(rounded_parts, dim=-1)
        with torch.no_grad():
            scores = self.evaluate(feed).double().cpu()
        rows = least.repeat(len(GRAD_STEPS) * 2)
        f = scores.gather(1, rows[:, None])[:, 0].reshape(len(GRAD_STEPS), 2, n)
        f0 = log_probs[events].gather(1, least[:, None])[:, 0]
        # central, forward and backward differences: at a kink (ReLU, a kNN selection
        # changing) one one-sided difference still sees the gradient's own piece
        measured = torch.stack([f[:, 0] - f[:, 1], f[:, 0] - f0, f0 - f[:, 1]])
        predicted = torch.stack(
            [
                ((rounded[:, 0] - rounded[:, 1]) * grad[None]).sum(dim=-1),
                ((rounded[:, 0] - x[None]) * grad[None]).sum(dim=-1),
                ((x[None] - rounded[:, 1]) * grad[None]).sum(dim=-1),
            ]
        )
        error = (measured - predicted).abs() / predicted.abs().clamp(min=1e-300)
        error = torch.where(error.isnan(), torch.inf, error)  # a step out of the model's domain
        self.bridge_gradient_events = n
        best, at = error.reshape(-1, n).min(dim=0)
        kinds = ("central", "forward", "backward")
        for i in range(n):
            if not bool(best[i] <= GRAD_RTOL):
                kind, k = divmod(int(at[i]), len(GRAD_STEPS))
                return (
                    f"on event {int(events[i])}, a step of {float(steps[k] * scale[i]):.3g} "
                    f"along the bridge's gradient changes the log-probability of class "
                    f"{int(least[i])} by {float(measured[kind, k, i]):.4g} in onnxruntime, and "
                    f"by {float(predicted[kind, k, i]):.4g} by the bridge's gradient (closest "
                    f"of {len(GRAD_STEPS)} step sizes, {kinds[kind]} difference; tolerance "
                    f"{GRAD_RTOL:.0%})"
                )
        return None

    def _no_gradients(self, reason: str, fix: str = EXPORT_FIX) -> ModelError:
        """Record why the bridge gives no gradients, as the error to raise."""
        self.bridge_error = reason
        return ModelError(reason, file=self.path, field="attacks", fix=fix)

    def _convert(self) -> torch.nn.Module:
        """robustcheck's interpreter of the graph (onnx_graph), or ModelError naming the
        nodes it cannot run."""
        try:
            import onnx
        except ImportError:
            raise self._no_gradients(
                "the onnx package is not installed", 'pip install "pytest-robustcheck[onnx]"'
            ) from None
        from robustcheck.taggers.onnx_graph import OnnxGraph, UnsupportedGraph
        from robustcheck.taggers.onnx_ops import SUPPORTED

        try:
            model = onnx.load(str(self.path))  # external data from beside the file
        except Exception as exc:
            raise self._no_gradients(
                f"the onnx package cannot read the model: {exception_text(exc)}",
                "keep the model's external data file(s) beside it, under the names the model "
                "records",
            ) from None
        try:
            return OnnxGraph(model)
        except UnsupportedGraph as exc:
            several = len(exc.nodes) > 1
            raise self._no_gradients(
                f"robustcheck's ONNX interpreter cannot run {len(exc.nodes)} node"
                f"{'s' if several else ''} of the model: {exc} (it runs {len(SUPPORTED)} "
                "operators of the default ONNX domain, listed in "
                "robustcheck.taggers.onnx_ops.SUPPORTED; re-export the model without "
                f"{'these' if several else 'this'}, or open an issue naming "
                f"{'them' if several else 'it'})",
                f"{EXPORT_FIX}, or re-export the model without these operators, or set "
                'on_gradient_failure = "spsa" on the attack',
            ) from None

    def _bridge_log_probs(self, module: torch.nn.Module, inputs: Inputs) -> torch.Tensor:
        raw = module(*(inputs[name] for name in self.binding))
        return to_log_probs(select_output(raw, self.output, self.output_names), self.scores)

    def log_probs(self, inputs: Inputs) -> torch.Tensor:
        if self._bridge is None:
            raise ModelError(
                "no gradients for this ONNX model",
                file=self.path,
                field="attacks",
                fix=self.bridge_error,
            )
        return self._bridge_log_probs(self._bridge, inputs)

    def to(self, device: torch.device) -> OnnxTagger:
        self.device = device
        if self._bridge is not None:
            self._bridge = self._bridge.to(device)
        return self

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        yield  # the bridge is our own copy, already in eval mode with frozen parameters


def _binary(x: torch.Tensor) -> bool:
    """Whether ``x`` holds only 0s and 1s (a mask or a flag)."""
    return bool(((x == 0) | (x == 1)).all())


def load_onnx(path: Path, **kwargs: Any) -> OnnxTagger:
    return OnnxTagger(path, **kwargs)
