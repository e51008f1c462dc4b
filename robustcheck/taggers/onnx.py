"""Tagger backend: ONNX models, scored by onnxruntime.

Gradients come from an onnx2torch conversion of the same graph, which is used only after it
has been checked against onnxruntime on the spec's own data.
"""

from __future__ import annotations

import contextlib
import warnings
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

# onnx2torch does not know the Constant of opsets 19 and newer that torch exports contain.
BRIDGE_OPSET = 18
BRIDGE_ATOL = 1e-4
BRIDGE_RTOL = 1e-3


EXPORT_FIX = "export the torch model (TorchScript or .pt2) for gradients"


class OnnxTagger(Tagger):
    """Scores from onnxruntime; input gradients through a verified onnx2torch bridge."""

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
        """Convert with onnx2torch and verify it against onnxruntime on ``sample``.

        Raises ModelError naming the reason when the bridge is unusable.
        """
        if self._bridge is not None:
            return
        module = self._convert()
        module = module.to(self.device)
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        with torch.no_grad():
            ours = torch.exp(self._bridge_log_probs(module, sample))
        theirs = torch.exp(self.evaluate(sample))
        diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
        self.bridge_max_diff = diff
        if not torch.allclose(ours, theirs, atol=BRIDGE_ATOL, rtol=BRIDGE_RTOL):
            raise self._no_gradients(
                f"the onnx2torch conversion disagrees with onnxruntime by up to {diff:.3g} in "
                "class probability"
            )
        with torch.enable_grad():
            reason = gradient_problem(
                lambda inputs: self._bridge_log_probs(module, inputs), sample, finite=True
            )
        if reason is not None:
            raise self._no_gradients(
                f"the onnx2torch conversion gives no usable gradients: {reason}"
            )
        self._bridge = module

    def _no_gradients(self, reason: str, fix: str = EXPORT_FIX) -> ModelError:
        """Record why the bridge gives no gradients, as the error to raise."""
        self.bridge_error = reason
        return ModelError(reason, file=self.path, field="attacks", fix=fix)

    def _convert(self) -> torch.nn.Module:
        try:
            import onnx
            from onnx2torch import convert
        except Exception as exc:
            raise self._no_gradients(
                f"onnx2torch is not usable here ({exc})", 'pip install "pytest-robustcheck[onnx]"'
            ) from None
        from robustcheck.taggers import onnx_ops  # noqa: F401  (registers what onnx2torch lacks)

        model = onnx.load(str(self.path))
        opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            default=BRIDGE_OPSET,
        )
        downgrade = ""
        if opset > BRIDGE_OPSET:
            try:
                model = onnx.version_converter.convert_version(model, BRIDGE_OPSET)
            except Exception as exc:  # convert as it is; the cause is named if that fails
                downgrade = (
                    f" (its opset {opset} could not be converted to {BRIDGE_OPSET} first: "
                    f"{exception_text(exc)})"
                )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return convert(model)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise self._no_gradients(
                f"onnx2torch cannot convert the model: {first}{downgrade}"
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


def load_onnx(path: Path, **kwargs: Any) -> OnnxTagger:
    return OnnxTagger(path, **kwargs)
