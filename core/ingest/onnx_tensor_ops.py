"""ONNX operators without weights: arithmetic, clamping, reshaping and shape computation.

On constants (and symbolic shapes) they are folded with numpy at import time; on runtime
tensors they become the canonical ``torch`` calls the graph passes match on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import NodeProto
from torch import fx, nn

from core.ingest.fx_builder import shape_of
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_layers import per_feature
from core.ingest.onnx_values import (
    BATCH,
    NodeUnsupported,
    Value,
    constant_ints,
    constant_scalar,
    is_runtime,
    non_batch_axes,
    normalise_axis,
    require_constant,
    resolve_reshape,
)


def _present(inputs: list[Value | None], index: int) -> Value | None:
    return inputs[index] if len(inputs) > index else None


def _numpy_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return np.floor_divide(a, b)  # shape arithmetic: positive integers
    return np.divide(a, b)


def _binary(function: Callable, fold: Callable, commutative: bool) -> Handler:
    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        a, b = inputs[0], inputs[1]
        if not is_runtime(a) and not is_runtime(b):
            ctx.check_folded_size(np.broadcast_shapes(a.shape, b.shape))  # type: ignore[union-attr]
            return np.asarray(fold(a, b))
        if is_runtime(a) and is_runtime(b):
            return ctx.builder.call_function(ctx.name(node), function, a, b)
        if function is torch.add and is_runtime(a) and _fusable_bias(ctx, node, a, b):
            return a
        if is_runtime(a):
            return ctx.builder.call_function(ctx.name(node), function, a, ctx.operand(node, b, a))
        if commutative:
            return ctx.builder.call_function(ctx.name(node), function, b, ctx.operand(node, a, b))
        constant = ctx.builder.buffer(f"{ctx.name(node)}_const", require_constant(a, "operand"))
        return ctx.builder.call_function(ctx.name(node), function, constant, b)

    return handler


def _fusable_bias(ctx: ImportContext, node: NodeProto, x: fx.Node, bias: Value) -> bool:
    """MatMul followed by Add of a per-feature constant is one ``nn.Linear``: fuse it."""
    if not x.meta.get("bias_free_linear") or ctx.uses(node.input[0]) != 1:
        return False
    layer = ctx.builder.root.get_submodule(str(x.target))
    constant = require_constant(bias, "the bias")
    if constant.ndim > len(shape_of(x)):
        return False
    try:
        vector = per_feature(constant, layer.out_features)
    except NodeUnsupported:
        return False
    layer.bias = nn.Parameter(torch.from_numpy(np.array(vector, dtype=np.float32)),
                              requires_grad=False)
    x.meta["bias_free_linear"] = False
    return True


def _clamp(ctx: ImportContext, node: NodeProto, x: Value | None,
           low: float | None, high: float | None) -> Value:
    """``torch.clamp``; a Max then Min pair (how some exporters write clamp) becomes one node."""
    if not is_runtime(x):
        return np.clip(require_constant(x, "the clamp input"), low, high)
    bounds = {key: value for key, value in (("min", low), ("max", high)) if value is not None}
    if not bounds:
        return x
    if (x.target is torch.clamp and ctx.uses(node.input[0]) == 1
            and not set(bounds) & set(x.kwargs)):
        x.kwargs = {**x.kwargs, **bounds}
        return x
    return ctx.builder.call_function(ctx.name(node), torch.clamp, x, **bounds)


def clip(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    attrs = ctx.attrs(node)
    low_input, high_input = _present(inputs, 1), _present(inputs, 2)
    low = constant_scalar(low_input, "Clip min") if low_input is not None else attrs.get("min")
    high = constant_scalar(high_input, "Clip max") if high_input is not None else attrs.get("max")
    return _clamp(ctx, node, inputs[0], low, high)


def _min_max(bound: str) -> Handler:
    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        if len(inputs) != 2:
            raise NodeUnsupported(f"{node.op_type} of {len(inputs)} inputs is not supported")
        runtime = [v for v in inputs if is_runtime(v)]
        if not runtime:
            fold = np.maximum if bound == "min" else np.minimum
            return fold(*(require_constant(v, "operand") for v in inputs))
        if len(runtime) == 2:
            raise NodeUnsupported(f"{node.op_type} of two computed tensors is not supported")
        constant = next(v for v in inputs if not is_runtime(v))
        limit = constant_scalar(constant, f"the {node.op_type} constant")
        x = runtime[0]
        if inputs[0] is not x:  # keep ``uses`` consulting the runtime input's name
            node = _swapped(node)
        return _clamp(ctx, node, x, *((limit, None) if bound == "min" else (None, limit)))

    return handler


def _swapped(node: NodeProto) -> NodeProto:
    copy = NodeProto()
    copy.CopyFrom(node)
    copy.input[0], copy.input[1] = node.input[1], node.input[0]
    return copy


def floor(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if not is_runtime(x):
        return np.floor(require_constant(x, "the Floor input"))
    return ctx.builder.call_function(ctx.name(node), torch.floor, x)


def relu(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if not is_runtime(x):
        return np.maximum(require_constant(x, "the Relu input"), 0)
    return ctx.builder.call_module(ctx.name(node), nn.ReLU(), x)


def passthrough(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    return inputs[0]  # type: ignore[return-value]


def constant(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    attrs = ctx.attrs(node)
    if "value" in attrs:
        return onnx.numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    raise NodeUnsupported("only numeric Constant values are supported")


def flatten(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    axis = int(ctx.attrs(node).get("axis", 1))
    if not is_runtime(x):
        array = require_constant(x, "the Flatten input")
        axis %= max(array.ndim, 1)
        return array.reshape(math.prod(array.shape[:axis]), -1)
    shape = shape_of(x)
    axis = axis + len(shape) if axis < 0 else axis
    if axis <= 0 or math.prod(shape[1:axis]) != 1:
        raise NodeUnsupported(f"Flatten(axis={axis}) would merge the batch with other axes")
    return ctx.builder.call_module(ctx.name(node), nn.Flatten(), x)


def reshape(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x, target = inputs[0], inputs[1]
    allow_zero = bool(ctx.attrs(node).get("allowzero", 0))
    if not isinstance(target, np.ndarray):
        raise NodeUnsupported("the Reshape target must be computable at import time")
    entries = list(target.reshape(-1))
    if not is_runtime(x):
        shape = resolve_reshape(x.shape, [int(e) for e in entries], allow_zero)  # type: ignore[union-attr]
        return np.reshape(x, shape)
    if allow_zero and 0 in entries:
        raise NodeUnsupported("Reshape with allowzero=1 and a zero dimension")
    return ctx.batch_reshape(node, x, entries)


def _reshape_like(ctx: ImportContext, node: NodeProto, x: fx.Node, out_shape: tuple) -> fx.Node:
    return ctx.batch_reshape(node, x, [BATCH, *out_shape[1:]])


def _axes(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> list[int] | None:
    """Axes from input 1 (opset 13+ Squeeze/Unsqueeze, 18+ reductions) or the attribute."""
    given = _present(inputs, 1)
    if given is not None:
        return constant_ints(given, f"the {node.op_type} axes")
    attribute = ctx.attrs(node).get("axes")
    return None if attribute is None else list(attribute)


def unsqueeze(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x, axes = inputs[0], _axes(ctx, node, inputs) or []
    if not is_runtime(x):
        return np.expand_dims(x, tuple(axes))
    rank = len(shape_of(x)) + len(axes)
    shape = list(shape_of(x))
    for axis in non_batch_axes(axes, rank):
        shape.insert(axis, 1)
    return _reshape_like(ctx, node, x, tuple(shape))


def squeeze(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x, axes = inputs[0], _axes(ctx, node, inputs)
    if not is_runtime(x):
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    shape = shape_of(x)
    chosen = non_batch_axes(axes, len(shape)) if axes is not None else [
        i for i, d in enumerate(shape) if d == 1 and i > 0]
    if any(shape[i] != 1 for i in chosen):
        raise NodeUnsupported("Squeeze of an axis whose size is not 1")
    return _reshape_like(ctx, node, x, tuple(d for i, d in enumerate(shape) if i not in chosen))


def concat(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    axis = int(ctx.attrs(node)["axis"])
    if not any(is_runtime(v) for v in inputs):
        return np.concatenate([np.asarray(v) for v in inputs], axis=axis)
    if not all(is_runtime(v) for v in inputs):
        raise NodeUnsupported("Concat of computed tensors with constants is not supported")
    axis = normalise_axis(axis, len(shape_of(inputs[0])))  # type: ignore[arg-type]
    if axis == 0:
        raise NodeUnsupported("Concat along the batch dimension is not supported")
    return ctx.builder.call_function(ctx.name(node), torch.cat, list(inputs), dim=axis)


def pad(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    mode = ctx.attrs(node).get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        raise NodeUnsupported(f"Pad mode {mode!r} is not supported (only constant zero)")
    value = _present(inputs, 2)
    if value is not None and constant_scalar(value, "the Pad value") != 0.0:
        raise NodeUnsupported("Pad with a non-zero value is not supported")
    if not is_runtime(x):
        raise NodeUnsupported("Pad of a constant is not supported")
    rank = len(shape_of(x))
    pads = constant_ints(inputs[1], "the Pad pads")
    axes = _present(inputs, 3)
    axis_list = (list(range(rank)) if axes is None
                 else [normalise_axis(a, rank) for a in constant_ints(axes, "Pad axes")])
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axis_list):
        begins[axis], ends[axis] = pads[i], pads[i + len(axis_list)]
    if begins[0] or ends[0]:
        raise NodeUnsupported("padding the batch dimension is not supported")
    first_padded = min((i for i in range(rank) if begins[i] or ends[i]), default=rank - 1)
    torch_pads = tuple(p for i in range(rank - 1, first_padded - 1, -1)
                       for p in (begins[i], ends[i]))
    return ctx.builder.call_function(ctx.name(node), F.pad, x, torch_pads)


def reduce_mean(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    attrs = ctx.attrs(node)
    keep = bool(attrs.get("keepdims", 1))
    axes = _axes(ctx, node, inputs)
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return x  # type: ignore[return-value]
    if not is_runtime(x):
        return np.mean(x, axis=None if not axes else tuple(axes), keepdims=keep)
    rank = len(shape_of(x))
    dims = non_batch_axes(axes if axes else list(range(rank)), rank)
    return ctx.builder.call_function(ctx.name(node), torch.mean, x, dim=dims, keepdim=keep)


def shape(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if is_runtime(x):
        dims = np.array([BATCH, *shape_of(x)[1:]], dtype=object)
    else:
        dims = np.array(np.shape(x), dtype=np.int64)
    attrs = ctx.attrs(node)
    return dims[attrs.get("start", 0):attrs.get("end", len(dims))]


def gather(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    data, indices = inputs[0], inputs[1]
    if is_runtime(data):
        raise NodeUnsupported("Gather on computed tensors is not supported")
    index = require_constant(indices, "the Gather indices")
    axis = int(ctx.attrs(node).get("axis", 0))
    ctx.check_folded_size((index.size, *np.delete(np.shape(data), axis)))
    return np.take(data, index, axis=axis)


def cast(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(ctx.attrs(node)["to"]))
    return _cast_to(inputs[0], dtype)


def cast_like(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    like = inputs[1]
    dtype = np.dtype(np.float32) if is_runtime(like) else np.asarray(like).dtype
    return _cast_to(inputs[0], dtype)


def _cast_to(x: Value | None, dtype: np.dtype) -> Value:
    if is_runtime(x):
        if dtype != np.float32:
            raise NodeUnsupported(f"casting computed tensors to {dtype} is not supported")
        return x  # type: ignore[return-value]
    array = np.asarray(x)
    if array.dtype == object and dtype.kind in "iu":
        return array  # symbolic shapes stay symbolic
    return array.astype(dtype)


def slice_(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    data = inputs[0]
    if is_runtime(data):
        raise NodeUnsupported("Slice of computed tensors is not supported")
    array = np.asarray(data)
    starts = constant_ints(inputs[1], "Slice starts")
    ends = constant_ints(inputs[2], "Slice ends")
    axes = _present(inputs, 3)
    steps = _present(inputs, 4)
    axis_list = list(range(len(starts))) if axes is None else constant_ints(axes, "Slice axes")
    step_list = [1] * len(starts) if steps is None else constant_ints(steps, "Slice steps")
    index = [slice(None)] * array.ndim
    for axis, start, end, step in zip(axis_list, starts, ends, step_list, strict=True):
        index[axis] = slice(start, end, step)
    return array[tuple(index)]


TENSOR_HANDLERS: dict[str, Handler] = {
    "Add": _binary(torch.add, np.add, commutative=True),
    "Sub": _binary(torch.sub, np.subtract, commutative=False),
    "Mul": _binary(torch.mul, np.multiply, commutative=True),
    "Div": _binary(torch.div, _numpy_divide, commutative=False),
    "Relu": relu,
    "Clip": clip,
    "Max": _min_max("min"),
    "Min": _min_max("max"),
    "Floor": floor,
    "Identity": passthrough,
    "Dropout": passthrough,
    "Constant": constant,
    "Flatten": flatten,
    "Reshape": reshape,
    "Unsqueeze": unsqueeze,
    "Squeeze": squeeze,
    "Concat": concat,
    "Pad": pad,
    "ReduceMean": reduce_mean,
    "Shape": shape,
    "Gather": gather,
    "Cast": cast,
    "CastLike": cast_like,
    "Slice": slice_,
}
