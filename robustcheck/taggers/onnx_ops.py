"""The ONNX operators the gradient bridge runs, each as differentiable torch operations.

One function per operator (default domain), called as ``op(inputs, attrs, opset)``: ``inputs``
the node's input tensors in order (None for an empty optional input), ``attrs`` its attributes
as Python values, ``opset`` the model's default-domain opset. It returns one tensor or a tuple
(one per output). The semantics follow the ONNX operator documentation of opsets 7 to 23
where the op set of today's taggers needs them: where an operand moved from an attribute to
an input between opsets (axes, split, clip bounds, slice bounds, ``k``), both are read.

Integer tensors that describe shapes (``Shape``, constants, their arithmetic) stay on the
CPU, so reading them (``.tolist()``) never waits for an accelerator; an op whose operands sit
on different devices computes on the accelerator's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Op = Callable[[list[Any], dict[str, Any], int], Any]

# ONNX TensorProto data types -> torch
DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    12: torch.int32,  # uint32, widened
    13: torch.int64,  # uint64, narrowed
    16: torch.bfloat16,
}


class UnsupportedNode(Exception):
    """A node the bridge cannot run as it stands (an attribute value or input it lacks)."""


def _same_device(*tensors: Tensor | None) -> list[Tensor | None]:
    """The tensors on one device: an accelerator's when any of them is on one."""
    devices = {t.device for t in tensors if t is not None and t.dim() > 0}
    if len(devices) <= 1:
        return list(tensors)
    target = next(d for d in devices if d.type != "cpu")
    return [t if t is None else t.to(target) for t in tensors]


def _ints(t: Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _operand(inputs: list[Any], index: int, attrs: dict[str, Any], name: str) -> Any:
    """An operand given as input ``index`` (newer opsets) or as attribute ``name``."""
    if len(inputs) > index and inputs[index] is not None:
        return _ints(inputs[index])
    return attrs.get(name)


def _elementwise(fn: Callable[..., Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        return fn(*_same_device(*inputs))

    return op


def _unary(fn: Callable[[Tensor], Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        return fn(inputs[0])

    return op


def _div(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # integer Div truncates
    return a / b


def _pow(a: Tensor, b: Tensor) -> Tensor:
    out = torch.pow(a, b)
    return out.to(a.dtype) if out.dtype != a.dtype else out


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        tensors = _same_device(*inputs)
        out = tensors[0]
        for t in tensors[1:]:
            out = fn(out, t)
        return out

    return op


def _mean(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return _variadic(torch.add)(inputs, attrs, opset) / len(inputs)


def _where(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    condition, a, b = _same_device(*inputs)
    return torch.where(condition, a, b)


def _clip(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    if opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low = inputs[1] if len(inputs) > 1 else None
        high = inputs[2] if len(inputs) > 2 else None
        low, high = (None if t is None else t.to(x.device, x.dtype) for t in (low, high))
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


def _cast(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return inputs[0].to(DTYPES[attrs["to"]])


def _cast_like(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return inputs[0].to(inputs[1].dtype)


def _identity(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return inputs[0]


def _dropout(inputs: list[Any], attrs: dict[str, Any], opset: int) -> tuple[Tensor, Tensor]:
    return inputs[0], torch.ones_like(inputs[0], dtype=torch.bool)  # inference: identity


def _softmax_like(fn: Callable[..., Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        x = inputs[0]
        if opset >= 13:
            return fn(x, dim=attrs.get("axis", -1))
        axis = attrs.get("axis", 1) % max(x.dim(), 1)  # older opsets: 2-D from axis on
        flat = x.reshape(int(math.prod(x.shape[:axis])), -1)
        return fn(flat, dim=1).reshape(x.shape)

    return op


def _gelu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    approximate = attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise UnsupportedNode(f"approximate={approximate!r}")
    return F.gelu(inputs[0], approximate=approximate)


def _leaky_relu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


def _elu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


def _selu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    x = inputs[0]
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _hard_sigmoid(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    return torch.clamp(alpha * inputs[0] + beta, 0.0, 1.0)


def _hard_swish(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return F.hardswish(inputs[0])


def _prelu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, slope = _same_device(*inputs)
    return torch.where(x >= 0, x, x * slope)


def _matmul(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    a, b = _same_device(*inputs)
    return torch.matmul(a, b)


def _gemm(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    a, b, c = _same_device(*(inputs + [None])[:3])
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    out = torch.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if c is not None:
        out = out + (c if beta == 1.0 else beta * c)
    return out


def _einsum(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return torch.einsum(attrs["equation"].replace(" ", ""), *_same_device(*inputs))


def _layer_norm(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, scale, bias = _same_device(*(inputs + [None])[:3])
    axis = attrs.get("axis", -1) % x.dim()
    shape = list(x.shape[axis:])
    if attrs.get("stash_type", 1) != 1:
        raise UnsupportedNode(f"stash_type={attrs['stash_type']}")
    eps = attrs.get("epsilon", 1e-5)
    if list(scale.shape) == shape and (bias is None or list(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, eps)
    out = F.layer_norm(x, shape, None, None, eps) * scale  # scale and bias broadcast
    return out if bias is None else out + bias


def _batch_norm(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, scale, bias, mean, var = _same_device(*inputs[:5])
    shape = [1, -1] + [1] * (x.dim() - 2)
    eps = attrs.get("epsilon", 1e-5)
    inv = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + eps)
    return (x - mean.reshape(shape)) * inv + bias.reshape(shape)


def _conv(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, w, b = _same_device(*(inputs + [None])[:3])
    dims = x.dim() - 2
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedNode(f"auto_pad={attrs['auto_pad']!r}")
    pads = attrs.get("pads", [0] * 2 * dims)
    if pads[:dims] != pads[dims:]:
        x = F.pad(x, [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])])
        pads = [0] * 2 * dims
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(dims)
    if conv is None:
        raise UnsupportedNode(f"{dims}-dimensional convolution")
    return conv(
        x,
        w,
        b,
        stride=attrs.get("strides", [1] * dims),
        padding=pads[:dims],
        dilation=attrs.get("dilations", [1] * dims),
        groups=attrs.get("group", 1),
    )


def _global_average_pool(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _shape(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    shape = list(inputs[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end")
    return torch.tensor(shape[start:end], dtype=torch.int64)


def _size(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return torch.tensor(inputs[0].numel(), dtype=torch.int64)


def _reshape(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    shape = _operand(inputs, 1, attrs, "shape")
    if not attrs.get("allowzero", 0):  # a 0 copies the input's axis
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return torch.reshape(x, shape)


def _flatten(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(math.prod(x.shape[:axis])), int(math.prod(x.shape[axis:])))


def _squeeze(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    axes = _operand(inputs, 1, attrs, "axes")
    if axes is None:
        return torch.squeeze(x)
    return torch.squeeze(x, tuple(a % x.dim() for a in axes))


def _unsqueeze(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    axes = _operand(inputs, 1, attrs, "axes")
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _transpose(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    perm = attrs.get("perm", list(reversed(range(x.dim()))))
    return x.permute(*perm)


def _concat(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    tensors = [t for t in _same_device(*inputs) if t is not None]
    dtype = tensors[0].dtype
    return torch.cat([t.to(dtype) for t in tensors], dim=attrs["axis"])


def _split(inputs: list[Any], attrs: dict[str, Any], opset: int, outputs: int) -> Any:
    x = inputs[0]
    axis = attrs.get("axis", 0)
    sizes = _operand(inputs, 1, attrs, "split")
    if sizes is None:
        length = x.shape[axis]
        parts = attrs.get("num_outputs", outputs)
        size = math.ceil(length / parts)  # the last part smaller (Split-18)
        sizes = [min(size, length - i * size) for i in range(parts)]
    return tuple(torch.split(x, sizes, dim=axis))


def _slice(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    if opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 else None
        steps = _ints(inputs[4]) if len(inputs) > 4 else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.dim()
        length = x.shape[axis]
        if step > 0:
            start = max(0, min(length, start + length if start < 0 else start))
            end = max(0, min(length, end + length if end < 0 else end))
            index[axis] = slice(start, max(start, end), step)
        else:  # a negative step: slice the flipped axis
            start = max(-1, min(length - 1, start + length if start < 0 else start))
            end = max(-1, min(length - 1, end + length if end < 0 else end))
            flipped_start, flipped_end = length - 1 - start, length - 1 - end
            index[axis] = slice(flipped_start, max(flipped_start, flipped_end), -step)
            flips.append(axis)
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]


def _gather(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, index = _same_device(*inputs)
    axis = attrs.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index).long()
    if index.dim() == 0:
        return (
            x.select(axis, int(index))
            if index.device.type == "cpu"
            else x[(slice(None),) * axis + (index,)]
        )
    flat = torch.index_select(x, axis, index.reshape(-1))
    return flat.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1 :])


def _gather_elements(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, index = _same_device(*inputs)
    axis = attrs.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index).long()
    return torch.gather(x, axis, index)


def _gather_nd(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, index = _same_device(*inputs)
    batch = attrs.get("batch_dims", 0)
    depth = index.shape[-1]
    index = index.long()
    limits = torch.tensor(x.shape[batch : batch + depth], device=index.device)
    index = torch.where(index < 0, index + limits, index)
    batch_shape = x.shape[:batch]
    n = int(math.prod(batch_shape))
    data = x.reshape(n, *x.shape[batch:])
    idx = index.reshape(n, -1, depth)  # (batch, points, depth)
    rows = torch.arange(n, device=x.device).unsqueeze(1).expand(n, idx.shape[1])
    picked = data[(rows, *idx.unbind(-1))]  # (batch, points, rest...)
    return picked.reshape(*index.shape[:-1], *x.shape[batch + depth :])


def _scatter_nd(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, index, updates = _same_device(*inputs)
    depth = index.shape[-1]
    index = index.long().reshape(-1, depth)
    updates = updates.reshape(index.shape[0], *x.shape[depth:])
    key = tuple(index.unbind(-1))
    reduction = attrs.get("reduction", "none")
    out = x.clone()
    if reduction == "none":
        return out.index_put(key, updates)
    if reduction == "add":
        return out.index_put(key, updates, accumulate=True)
    if reduction == "mul":
        return out.index_put(key, out[key] * updates)
    raise UnsupportedNode(f"reduction={reduction!r}")


def _scatter_elements(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, index, updates = _same_device(*inputs)
    axis = attrs.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index).long()
    reduction = attrs.get("reduction", "none")
    if reduction == "none":
        return torch.scatter(x, axis, index, updates)
    names = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}
    if reduction not in names:
        raise UnsupportedNode(f"reduction={reduction!r}")
    return torch.scatter_reduce(x, axis, index, updates, names[reduction])


def _expand(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    shape = _ints(inputs[1])
    rank = max(x.dim(), len(shape))  # broadcast both ways: a 1 in shape keeps x's axis
    shape = [1] * (rank - len(shape)) + shape
    current = [1] * (rank - x.dim()) + list(x.shape)
    target = [c if s == 1 else s for s, c in zip(shape, current, strict=True)]
    return x.reshape(current).expand(target)


def _tile(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return inputs[0].repeat(*_ints(inputs[1]))


def _range(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    start, limit, delta = inputs
    dtype = start.dtype
    values = [t.item() for t in (start, limit, delta)]
    device = next((t.device for t in inputs if t.device.type != "cpu"), start.device)
    return torch.arange(*values, dtype=dtype, device=device)


def _constant_of_shape(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    value = attrs.get("value")
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return torch.full(_ints(inputs[0]), fill.reshape(-1)[0].item(), dtype=fill.dtype)


def _constant(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    if "value" in attrs:
        return attrs["value"]
    if "value_float" in attrs:
        return torch.tensor(attrs["value_float"], dtype=torch.float32)
    if "value_floats" in attrs:
        return torch.tensor(attrs["value_floats"], dtype=torch.float32)
    if "value_int" in attrs:
        return torch.tensor(attrs["value_int"], dtype=torch.int64)
    if "value_ints" in attrs:
        return torch.tensor(attrs["value_ints"], dtype=torch.int64)
    raise UnsupportedNode(f"a Constant with {sorted(attrs)}")


def _topk(inputs: list[Any], attrs: dict[str, Any], opset: int) -> tuple[Tensor, Tensor]:
    x = inputs[0]
    k = _ints(inputs[1])[0] if len(inputs) > 1 else attrs["k"]
    values, indices = torch.topk(
        x, k, dim=attrs.get("axis", -1), largest=bool(attrs.get("largest", 1)), sorted=True
    )
    return values, indices


def _arg(fn: Callable[..., Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        x = inputs[0]
        axis = attrs.get("axis", 0)
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            flipped = fn(torch.flip(x, [axis]), dim=axis, keepdim=keep)
            return x.shape[axis] - 1 - flipped
        return fn(x, dim=axis, keepdim=keep)

    return op


def _reduce(fn: Callable[[Tensor, list[int], bool], Tensor]) -> Op:
    def op(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
        x = inputs[0]
        axes = _operand(inputs, 1, attrs, "axes")
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, [a % x.dim() for a in axes] if x.dim() else [], keep)

    return op


def _reduce_max(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amax(x, dim=axes, keepdim=keep)


def _reduce_min(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amin(x, dim=axes, keepdim=keep)


def _reduce_prod(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    for axis in sorted(axes, reverse=True):
        x = torch.prod(x, dim=axis, keepdim=keep)
    return x


def _mod(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    a, b = _same_device(*inputs)
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


def _trilu(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    k = _ints(inputs[1])[0] if len(inputs) > 1 and inputs[1] is not None else 0
    return torch.triu(inputs[0], k) if attrs.get("upper", 1) else torch.tril(inputs[0], k)


def _pad(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    pads = _operand(inputs, 1, attrs, "pads")
    value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0.0)
    value = float(value.reshape(-1)[0]) if isinstance(value, Tensor) else float(value)
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    axes = [a % x.dim() for a in axes] if axes is not None else list(range(x.dim()))
    half = len(axes)
    widths = [0] * (2 * x.dim())
    for i, axis in enumerate(axes):  # torch: last axis first, (before, after) pairs
        widths[2 * (x.dim() - 1 - axis)] = pads[i]
        widths[2 * (x.dim() - 1 - axis) + 1] = pads[i + half]
    mode = attrs.get("mode", "constant")
    if mode != "constant":
        return F.pad(x, widths, mode={"edge": "replicate"}.get(mode, mode))
    return F.pad(x, widths, value=value)


def _one_hot(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    index, depth, values = inputs
    depth = int(depth.reshape(-1)[0])
    index = torch.where(index < 0, index + depth, index).long()
    hot = F.one_hot(index, depth)
    axis = attrs.get("axis", -1) % hot.dim()
    hot = hot.movedim(-1, axis)
    off, on = values[0], values[1]
    return torch.where(hot.bool(), on, off)


def _nonzero(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return torch.nonzero(inputs[0]).t()


def _cumsum(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x, axis = inputs[0], _ints(inputs[1])[0]
    if attrs.get("reverse", 0):
        x = torch.flip(x, [axis])
    out = torch.cumsum(x, axis)
    if attrs.get("exclusive", 0):
        out = out - x
    return torch.flip(out, [axis]) if attrs.get("reverse", 0) else out


def _isinf(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    x = inputs[0]
    positive, negative = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    return ((x == math.inf) & bool(positive)) | ((x == -math.inf) & bool(negative))


def _split_to_sequence(inputs: list[Any], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = inputs[0]
    axis = attrs.get("axis", 0)
    split = inputs[1] if len(inputs) > 1 else None
    if split is None:  # pieces of length 1, the axis dropped unless keepdims
        parts = torch.split(x, 1, dim=axis)
        return list(parts) if attrs.get("keepdims", 1) else [p.squeeze(axis) for p in parts]
    sizes = _ints(split)
    if split.dim() == 0:
        return list(torch.split(x, sizes[0], dim=axis))
    return list(torch.split(x, sizes, dim=axis))


def _sequence_at(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return inputs[0][_ints(inputs[1])[0]]


def _sequence_construct(inputs: list[Any], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    return list(inputs)


def _sequence_length(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    return torch.tensor(len(inputs[0]), dtype=torch.int64)


def _concat_from_sequence(inputs: list[Any], attrs: dict[str, Any], opset: int) -> Tensor:
    tensors = _same_device(*inputs[0])
    if attrs.get("new_axis", 0):
        return torch.stack(tensors, dim=attrs["axis"])
    return torch.cat(tensors, dim=attrs["axis"])


OPS: dict[str, Op] = {
    # arithmetic and comparisons, broadcasting as numpy does
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(_div),
    "Pow": _elementwise(_pow),
    "Mod": _mod,
    "Equal": _elementwise(torch.eq),
    "Less": _elementwise(torch.lt),
    "LessOrEqual": _elementwise(torch.le),
    "Greater": _elementwise(torch.gt),
    "GreaterOrEqual": _elementwise(torch.ge),
    "And": _elementwise(torch.logical_and),
    "Or": _elementwise(torch.logical_or),
    "Xor": _elementwise(torch.logical_xor),
    "Not": _unary(torch.logical_not),
    "Where": _where,
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Mean": _mean,
    "Clip": _clip,
    # element-wise functions
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Sign": _unary(torch.sign),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil),
    "Round": _unary(torch.round),
    "Sin": _unary(torch.sin),
    "Cos": _unary(torch.cos),
    "Tan": _unary(torch.tan),
    "Atan": _unary(torch.atan),
    "Asin": _unary(torch.asin),
    "Acos": _unary(torch.acos),
    "Sinh": _unary(torch.sinh),
    "Cosh": _unary(torch.cosh),
    "Tanh": _unary(torch.tanh),
    "Sigmoid": _unary(torch.sigmoid),
    "Erf": _unary(torch.erf),
    "Relu": _unary(torch.relu),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Mish": _unary(F.mish),
    "IsNaN": _unary(torch.isnan),
    "IsInf": _isinf,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Selu": _selu,
    "PRelu": _prelu,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Gelu": _gelu,
    "Softmax": _softmax_like(torch.softmax),
    "LogSoftmax": _softmax_like(torch.log_softmax),
    "Cast": _cast,
    "CastLike": _cast_like,
    "Identity": _identity,
    "Dropout": _dropout,
    # linear algebra and normalisation
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Einsum": _einsum,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "Conv": _conv,
    "GlobalAveragePool": _global_average_pool,
    # shapes, indexing and selection
    "Shape": _shape,
    "Size": _size,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "ScatterND": _scatter_nd,
    "ScatterElements": _scatter_elements,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Constant": _constant,
    "TopK": _topk,
    "ArgMax": _arg(torch.argmax),
    "ArgMin": _arg(torch.argmin),
    "Trilu": _trilu,
    "Pad": _pad,
    "OneHot": _one_hot,
    "NonZero": _nonzero,
    "CumSum": _cumsum,
    # sequences (Python lists of tensors)
    "SplitToSequence": _split_to_sequence,
    "SequenceAt": _sequence_at,
    "SequenceConstruct": _sequence_construct,
    "SequenceLength": _sequence_length,
    "ConcatFromSequence": _concat_from_sequence,
    # reductions
    "ReduceSum": _reduce(lambda x, axes, keep: torch.sum(x, dim=axes, keepdim=keep)),
    "ReduceMean": _reduce(lambda x, axes, keep: torch.mean(x, dim=axes, keepdim=keep)),
    "ReduceMax": _reduce(_reduce_max),
    "ReduceMin": _reduce(_reduce_min),
    "ReduceProd": _reduce(_reduce_prod),
    "ReduceL1": _reduce(lambda x, axes, keep: x.abs().sum(dim=axes, keepdim=keep)),
    "ReduceL2": _reduce(lambda x, axes, keep: x.pow(2).sum(dim=axes, keepdim=keep).sqrt()),
    "ReduceSumSquare": _reduce(lambda x, axes, keep: x.pow(2).sum(dim=axes, keepdim=keep)),
    "ReduceLogSumExp": _reduce(lambda x, axes, keep: torch.logsumexp(x, dim=axes, keepdim=keep)),
}
# ops whose outputs are as many as the node declares
MULTI_OUTPUT = {"Split": _split}
SUPPORTED: Sequence[str] = sorted([*OPS, *MULTI_OUTPUT])
