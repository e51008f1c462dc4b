"""onnx2torch converters for the ops that today's torch exporters write and onnx2torch 1.5.15
lacks or gets wrong: Split-18, Reshape with allowzero=1, and Clip with an empty optional bound
(the legacy export of ``clamp(min=...)``).

Importing this module registers them in onnx2torch's own registry; each converter is a small
module of differentiable torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from onnx2torch.node_converters import registry
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]


def _replace(operation_type: str, version: int) -> Callable[[Converter], Converter]:
    """Register a converter in place of onnx2torch's own for this op and version."""

    def deco(converter: Converter) -> Converter:
        description = registry.OperationDescription(
            domain="", operation_type=operation_type, version=version
        )
        registry._CONVERTER_REGISTRY.pop(description, None)
        return registry.add_converter(operation_type=operation_type, version=version)(converter)

    return deco


class Split18(torch.nn.Module, OnnxToTorchModule):
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


@registry.add_converter(operation_type="Split", version=18)
def _split18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    num_outputs = node.attributes.get("num_outputs", len(node.output_values))
    return OperationConverterResult(
        torch_module=Split18(axis=node.attributes.get("axis", 0), num_outputs=num_outputs),
        onnx_mapping=onnx_mapping_from_node(node),
    )


class ReshapeAllowZero(torch.nn.Module, OnnxToTorchModule):
    """Reshape with allowzero=1: a 0 in the shape is a zero-length axis, not a copied one."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(s) for s in shape.tolist()])


_reshape14 = registry.get_converter("Reshape", 14)


@_replace("Reshape", 14)
def _reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if node.attributes.get("allowzero", 0) != 1:
        return _reshape14(node, graph)
    return OperationConverterResult(
        torch_module=ReshapeAllowZero(), onnx_mapping=onnx_mapping_from_node(node)
    )


class Clip(torch.nn.Module, OnnxToTorchModule):
    """Clip-11 and newer: either bound may be absent (an empty input name) or computed."""

    def forward(
        self, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None
    ) -> torch.Tensor:
        if low is None and high is None:
            return x
        return torch.clamp(x, low, high)


def _clip(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(
        torch_module=Clip(),
        onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values),
    )


for _version in (11, 12, 13):
    _replace("Clip", _version)(_clip)
