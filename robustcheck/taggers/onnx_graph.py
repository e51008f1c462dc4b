"""robustcheck's ONNX interpreter: an ONNX graph run node by node with torch operations, so
that autograd gives input gradients (the gradient bridge of :mod:`robustcheck.taggers.onnx`).

The graph is read as it is, at its own opset: no version conversion, no rewrite. Every node
is checked at construction against the operators of :mod:`robustcheck.taggers.onnx_ops`; a
node the bridge cannot run is named (node name, operator, domain, opset) before any forward
pass. Initializers become buffers (floating point; they follow ``.to(device)``) or CPU
constants (integer shape data, read on the host without waiting for an accelerator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustcheck.taggers import onnx_ops

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Step:
    """One node of the graph, ready to run."""

    name: str
    op_type: str
    op: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


class UnsupportedGraph(Exception):
    """Nodes the bridge cannot run; ``nodes`` lists (node name, op type, domain, the
    domain's opset, reason)."""

    def __init__(self, nodes: list[tuple[str, str, str, int, str]]) -> None:
        self.nodes = nodes
        shown = "; ".join(
            f"node `{name}` ({_qualified(domain, op_type)}-{version}{': ' + why if why else ''})"
            for name, op_type, domain, version, why in nodes[:5]
        )
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        super().__init__(f"{shown}{more}")


class NodeFailed(Exception):
    """A node raised while running; names it."""

    def __init__(self, step: Step, opset: int, exc: BaseException) -> None:
        self.step = step
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        super().__init__(f"node `{step.name}` ({step.op_type}-{opset}) failed: {first}")


def _qualified(domain: str, op_type: str) -> str:
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}::{op_type}"


def _attribute(attribute: Any) -> Any:
    """An attribute as a Python value (tensors as torch tensors, strings decoded)."""
    from onnx import AttributeProto, helper, numpy_helper

    if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise onnx_ops.UnsupportedNode("a subgraph attribute (control flow)")
    if attribute.type == AttributeProto.TENSOR:
        return _tensor(numpy_helper.to_array(attribute.t))
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.uint64 or array.dtype == np.uint32:
        array = array.astype(np.int64)
    return torch.from_numpy(np.array(array, copy=True))


def default_opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), default=1)


class OnnxGraph(torch.nn.Module):
    """The ONNX graph of ``model`` as a torch module: ``forward(*inputs)`` in the graph's
    input order gives its outputs (one tensor, or a tuple when there are several)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        import onnx

        functions = {(f.domain, f.name) for f in model.functions}
        if functions and any((n.domain, n.op_type) in functions for n in model.graph.node):
            try:
                from onnx.inliner import inline_local_functions
            except ImportError:  # onnx < 1.16: the function calls are named as unsupported
                pass
            else:
                model = inline_local_functions(model)
        self.opset = default_opset(model)
        graph = model.graph
        self._buffer_names: list[tuple[str, str]] = []
        self._constants: dict[str, torch.Tensor] = {}
        for initializer in graph.initializer:
            self._constant(initializer.name, _tensor(onnx.numpy_helper.to_array(initializer)))
        known = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in known]
        # the dtype each input is declared with (onnxruntime is fed the same)
        self.input_dtypes = [
            onnx_ops.DTYPES.get(i.type.tensor_type.elem_type)
            for i in graph.input
            if i.name not in known
        ]
        self.output_names = [o.name for o in graph.output]
        versions = {o.domain: o.version for o in model.opset_import}
        steps, unsupported = [], []
        for index, node in enumerate(graph.node):
            name = node.name or f"#{index}"
            if node.domain not in DEFAULT_DOMAINS:
                version = versions.get(node.domain, 1)
                unsupported.append((name, node.op_type, node.domain, version, "a custom domain"))
                continue
            op = onnx_ops.OPS.get(node.op_type)
            if op is None and node.op_type in onnx_ops.MULTI_OUTPUT:
                op = _with_outputs(onnx_ops.MULTI_OUTPUT[node.op_type], len(node.output))
            if op is None:
                unsupported.append((name, node.op_type, node.domain, self.opset, ""))
                continue
            try:
                attrs = {a.name: _attribute(a) for a in node.attribute}
            except onnx_ops.UnsupportedNode as exc:
                unsupported.append((name, node.op_type, node.domain, self.opset, str(exc)))
                continue
            if node.op_type == "Constant":  # computed once, kept like an initializer
                self._constant(node.output[0], op([], attrs, self.opset))
                continue
            steps.append(Step(name, node.op_type, op, tuple(node.input), tuple(node.output), attrs))
        if unsupported:
            raise UnsupportedGraph(unsupported)
        self.steps = steps

    def _constant(self, name: str, value: torch.Tensor) -> None:
        """A fixed value of the graph: a buffer when floating point (it follows the module's
        device), else a CPU tensor (shape data, read on the host)."""
        if value.is_floating_point():
            attr = f"constant_{len(self._buffer_names)}"
            self.register_buffer(attr, value)
            self._buffer_names.append((name, attr))
        else:
            self._constants[name] = value

    def forward(self, *inputs: torch.Tensor) -> Any:
        values = self._run(inputs)
        outputs = tuple(values[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def _run(self, inputs: tuple[torch.Tensor, ...], retain: bool = False) -> dict[str, Any]:
        """Every value of the graph on ``inputs`` (``retain``: intermediate floating-point
        values keep their gradients, for :meth:`locate_nonfinite`)."""
        values: dict[str, Any] = dict(self._constants)
        for name, attr in self._buffer_names:
            values[name] = getattr(self, attr)
        values.update(
            (name, x if dtype is None or x.dtype == dtype else x.to(dtype))
            for name, x, dtype in zip(self.input_names, inputs, self.input_dtypes, strict=True)
        )
        opset = self.opset
        for step in self.steps:
            args = [values[name] if name else None for name in step.inputs]
            try:
                out = step.op(args, step.attrs, opset)
            except Exception as exc:
                raise NodeFailed(step, opset, exc) from exc
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(step.outputs, outs, strict=False):
                if retain and isinstance(value, torch.Tensor) and value.requires_grad:
                    value.retain_grad()
                values[name] = value
        return values

    def locate_nonfinite(
        self, inputs: tuple[torch.Tensor, ...], loss: Any, ids: torch.Tensor | None = None
    ) -> str | None:
        """Where NaN or infinite values first appear in the graph on ``inputs``: the first
        node whose inputs are finite and whose output is not, else (for ``loss``, a function
        of the outputs, differentiated) the node whose outputs' gradients are finite and one
        of its inputs' gradient is not. None when neither happens. ``ids`` numbers the
        events in messages (default 0, 1, ...)."""
        leaves = tuple(x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs)
        with torch.enable_grad():
            values = self._run(leaves, retain=True)

        def bad(name: str) -> torch.Tensor | None:
            value = values.get(name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                return None
            wrong = ~torch.isfinite(value.detach())
            return wrong if bool(wrong.any()) else None

        events = len(leaves[0]) if leaves and leaves[0].dim() else 1
        for step in self.steps:
            if any(bad(name) is not None for name in step.inputs if name):
                return None  # a graph input is already not finite
            for name in step.outputs:
                wrong = bad(name)
                if wrong is not None:
                    value = values[name].detach()
                    kinds = _kinds(value[wrong])
                    rows = _rows(wrong, events, ids)
                    return (
                        f"node `{step.name}` ({step.op_type}-{self.opset}) gives {kinds} from "
                        f"finite inputs{_zero_inputs(step, values)} on {rows}"
                    )
        outputs = [values[name] for name in self.output_names]
        total = loss(outputs[0] if len(outputs) == 1 else tuple(outputs))
        if not total.requires_grad:
            return None
        total.backward()

        def grad_of(name: str) -> torch.Tensor | None:
            value = values.get(name)
            if value is None and name in self.input_names:
                value = leaves[self.input_names.index(name)]
            return getattr(value, "grad", None) if isinstance(value, torch.Tensor) else None

        def finite(grad: torch.Tensor | None) -> bool:
            return grad is None or bool(torch.isfinite(grad).all())

        for step in reversed(self.steps):
            if not all(finite(grad_of(name)) for name in step.outputs if name):
                continue
            for name in step.inputs:
                grad = grad_of(name) if name else None
                if not finite(grad):
                    wrong = ~torch.isfinite(grad)
                    where = _rows(wrong, events, ids)
                    return (
                        f"node `{step.name}` ({step.op_type}-{self.opset}) turns finite "
                        f"gradients of its output into {_kinds(grad[wrong])} gradients of its "
                        f"input `{name}`{_zero_inputs(step, values)} on {where} "
                        "(its derivative is not finite at these values)"
                    )
        return None


def _kinds(values: torch.Tensor) -> str:
    found = []
    if bool(torch.isnan(values).any()):
        found.append("NaN")
    if bool((values == float("inf")).any()):
        found.append("+inf")
    if bool((values == float("-inf")).any()):
        found.append("-inf")
    return " and ".join(found)


def _rows(wrong: torch.Tensor, events: int, ids: torch.Tensor | None) -> str:
    if wrong.dim() and wrong.shape[0] == events:
        hit = wrong.reshape(events, -1).any(dim=1).cpu()
        count = int(hit.sum())
        first = torch.nonzero(hit).flatten()[:3]
        first = (first if ids is None else ids.cpu()[first]).tolist()
        return f"{count:,} of {events:,} events (events {first})"
    return "every event (a value shared by all events)"


def _zero_inputs(step: Step, values: dict[str, Any]) -> str:
    """For an op undefined or unbounded at 0 (log, division, square root, power): the
    inputs that hold zeros."""
    if step.op_type not in ("Log", "Div", "Sqrt", "Pow", "Reciprocal"):
        return ""
    names = step.inputs[1:2] if step.op_type == "Div" else step.inputs[:1]
    zero = [
        f"`{name}`"
        for name in names
        if isinstance(values.get(name), torch.Tensor) and bool((values[name] == 0).any())
    ]
    return f" (its input {', '.join(zero)} is 0 there)" if zero else ""


def _with_outputs(op: Any, outputs: int) -> Any:
    def run(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Any:
        return op(inputs, attrs, opset, outputs)

    return run
