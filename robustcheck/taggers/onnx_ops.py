"""onnx2torch converters for the ops that today's torch exporters write and onnx2torch 1.5.15
lacks or gets wrong: Split-18, Gelu-20, Reshape with allowzero=1, and Clip with an empty
optional bound (the legacy export of ``clamp(min=...)``).

``register`` installs them in onnx2torch's own registry; each converter builds a small module
of differentiable torch ops. Gelu has no earlier opset, so the version conversion to the
bridge's opset fails on it: ``hide_from_downgrade`` first moves Gelu nodes to BRIDGE_DOMAIN,
which the version converter passes over, and their converter is registered there too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Converter = Callable[[Any, Any], Any]  # (OnnxNode, OnnxGraph) -> OperationConverterResult

BRIDGE_DOMAIN = "robustcheck_bridge"  # no dots: it becomes part of torch module names
# ops with no version before opset 19, which the downgrade to the bridge's opset cannot take
NO_PREVIOUS_VERSION = ("Gelu",)


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


class Gelu(torch.nn.Module):
    """Gelu-20, exact (erf) or with the tanh approximation."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x, approximate=self.approximate)


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


def _gelu(node: Any, graph: Any) -> Any:
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu with approximate={approximate!r}")
    return _result(Gelu(approximate), node)


def _reshape(node: Any, graph: Any) -> Any:
    if node.attributes.get("allowzero", 0) == 1:
        return _result(ReshapeAllowZero(), node)
    from onnx2torch.node_converters.reshape import OnnxReshape

    return _result(OnnxReshape(), node)


def _clip(node: Any, graph: Any) -> Any:
    return _result(Clip(), node)


CONVERTERS: dict[tuple[str, str, int], Converter] = {
    ("", "Split", 18): _split18,
    ("", "Gelu", 20): _gelu,
    (BRIDGE_DOMAIN, "Gelu", 1): _gelu,
    ("", "Reshape", 14): _reshape,  # in place of onnx2torch's, which refuses allowzero=1
    ("", "Clip", 11): _clip,  # in place of onnx2torch's, which reads an empty bound as dynamic
    ("", "Clip", 12): _clip,
    ("", "Clip", 13): _clip,
}


def register() -> None:
    """Install CONVERTERS in onnx2torch's registry as it is now; a no-op when they are there.

    Called before every conversion rather than at import: onnx2torch may have been imported
    afresh since this module was (a pytester inline run drops the modules it imported).
    """
    from onnx2torch.node_converters import registry

    table = registry._CONVERTER_REGISTRY  # replacing a converter has no public API
    for (domain, operation_type, version), converter in CONVERTERS.items():
        key = registry.OperationDescription(
            domain=domain, operation_type=operation_type, version=version
        )
        current = table.get(key)
        if current is converter:
            continue
        if current is None:
            registry.add_converter(operation_type, version, domain)(converter)
        else:
            table[key] = converter


def hide_from_downgrade(model: Any) -> Any:
    """``model``, or a copy whose NO_PREVIOUS_VERSION nodes sit in BRIDGE_DOMAIN, where the
    version conversion passes over them."""
    import onnx
    from onnx import helper

    def hidden(node: Any) -> bool:
        return node.domain in ("", "ai.onnx") and node.op_type in NO_PREVIOUS_VERSION

    if not any(hidden(node) for node in model.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if hidden(node):
            node.domain = BRIDGE_DOMAIN
    if all(o.domain != BRIDGE_DOMAIN for o in copy.opset_import):
        copy.opset_import.append(helper.make_opsetid(BRIDGE_DOMAIN, 1))
    return copy
