"""onnx2torch converters for the ops that today's torch exporters write and onnx2torch 1.5.15
lacks or gets wrong: Split-18, Reshape with allowzero=1, and Clip with an empty optional bound
(the legacy export of ``clamp(min=...)``).

``register`` installs them in onnx2torch's own registry; each converter builds a small module
of differentiable torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Converter = Callable[[Any, Any], Any]  # (OnnxNode, OnnxGraph) -> OperationConverterResult


class Split18(torch.nn.Module):
    """Split-18: sizes from the optional second input, else ``num_outputs`` parts of
    ceil(length / num_outputs), the last one smaller."""

    def __init__(self, axis: int, num_outputs: int) -> None:
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs

    def forward(
        self, x: torch.Tensor, split: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if split is not None:
            return torch.split(x, [int(s) for s in split.tolist()], dim=self.axis)
        size = math.ceil(x.shape[self.axis] / self.num_outputs)
        return torch.split(x, size, dim=self.axis)


class ReshapeAllowZero(torch.nn.Module):
    """Reshape with allowzero=1: a 0 in the shape is a zero-length axis, not a copied one."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(s) for s in shape.tolist()])


class Clip(torch.nn.Module):
    """Clip-11 and newer: either bound may be absent (an empty input name) or computed."""

    def forward(
        self, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None
    ) -> torch.Tensor:
        if low is None and high is None:
            return x
        return torch.clamp(x, low, high)


def _result(module: torch.nn.Module, node: Any) -> Any:
    """The converter's answer: ``module`` fed with all of the node's inputs (an empty optional
    input arrives as None) and giving all of its outputs."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values),
    )


def _split18(node: Any, graph: Any) -> Any:
    num_outputs = node.attributes.get("num_outputs", len(node.output_values))
    return _result(Split18(axis=node.attributes.get("axis", 0), num_outputs=num_outputs), node)


def _reshape(node: Any, graph: Any) -> Any:
    if node.attributes.get("allowzero", 0) == 1:
        return _result(ReshapeAllowZero(), node)
    from onnx2torch.node_converters.reshape import OnnxReshape

    return _result(OnnxReshape(), node)


def _clip(node: Any, graph: Any) -> Any:
    return _result(Clip(), node)


CONVERTERS: dict[tuple[str, int], Converter] = {
    ("Split", 18): _split18,
    ("Reshape", 14): _reshape,  # in place of onnx2torch's, which refuses allowzero=1
    ("Clip", 11): _clip,  # in place of onnx2torch's, which reads an empty bound as dynamic
    ("Clip", 12): _clip,
    ("Clip", 13): _clip,
}


def register() -> None:
    """Install CONVERTERS in onnx2torch's registry as it is now; a no-op when they are there.

    Called before every conversion rather than at import: onnx2torch may have been imported
    afresh since this module was (a pytester inline run drops the modules it imported).
    """
    from onnx2torch.node_converters import registry

    table = registry._CONVERTER_REGISTRY  # replacing a converter has no public API
    for (operation_type, version), converter in CONVERTERS.items():
        key = registry.OperationDescription(
            domain="", operation_type=operation_type, version=version
        )
        current = table.get(key)
        if current is converter:
            continue
        if current is None:
            registry.add_converter(operation_type=operation_type, version=version)(converter)
        else:
            table[key] = converter
