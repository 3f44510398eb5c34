"""ONNX operators that move data around: reshapes, concatenation, padding, reductions and
the shape arithmetic exporters emit for ``x.view(x.size(0), -1)``.

Shape arithmetic is folded at import time on symbolic shapes whose batch entry stays
``BATCH``, so every reshape keeps the batch dimension dynamic.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import NodeProto
from torch import fx, nn

from core.ingest.fx_builder import shape_of
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_values import (
    BATCH,
    NodeUnsupported,
    Value,
    constant_ints,
    constant_scalar,
    is_runtime,
    non_batch_axes,
    normalise_axis,
    optional_input,
    require_constant,
    resolve_reshape,
)


def _flatten(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    axis = int(ctx.attrs(node).get("axis", 1))
    if not is_runtime(x):
        array = require_constant(x, "the Flatten input")
        axis = axis + array.ndim if axis < 0 else axis
        return array.reshape(math.prod(array.shape[:axis]), -1)
    shape = shape_of(x)
    axis = axis + len(shape) if axis < 0 else axis
    if axis <= 0 or math.prod(shape[1:axis]) != 1:
        raise NodeUnsupported(f"Flatten(axis={axis}) would merge the batch with other axes")
    return ctx.builder.call_module(ctx.name(node), nn.Flatten(), x)


def _reshape(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
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
    given = optional_input(inputs, 1)
    if given is not None:
        return constant_ints(given, f"the {node.op_type} axes")
    attribute = ctx.attrs(node).get("axes")
    return None if attribute is None else list(attribute)


def _unsqueeze(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x, axes = inputs[0], _axes(ctx, node, inputs) or []
    if not is_runtime(x):
        return np.expand_dims(x, tuple(axes))
    rank = len(shape_of(x)) + len(axes)
    shape = list(shape_of(x))
    for axis in non_batch_axes(axes, rank):
        shape.insert(axis, 1)
    return _reshape_like(ctx, node, x, tuple(shape))


def _squeeze(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x, axes = inputs[0], _axes(ctx, node, inputs)
    if not is_runtime(x):
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    shape = shape_of(x)
    chosen = non_batch_axes(axes, len(shape)) if axes is not None else [
        i for i, d in enumerate(shape) if d == 1 and i > 0]
    if any(shape[i] != 1 for i in chosen):
        raise NodeUnsupported("Squeeze of an axis whose size is not 1")
    return _reshape_like(ctx, node, x, tuple(d for i, d in enumerate(shape) if i not in chosen))


def _concat(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    axis = int(ctx.attrs(node)["axis"])
    if not any(is_runtime(v) for v in inputs):
        arrays = [np.asarray(v) for v in inputs]
        ctx.check_folded_size(node, _concat_shape(arrays, axis), max(a.itemsize for a in arrays))
        return np.concatenate(arrays, axis=axis)
    if not all(is_runtime(v) for v in inputs):
        raise NodeUnsupported("Concat of computed tensors with constants is not supported")
    axis = normalise_axis(axis, len(shape_of(inputs[0])))  # type: ignore[arg-type]
    if axis == 0:
        raise NodeUnsupported("Concat along the batch dimension is not supported")
    return ctx.builder.call_function(ctx.name(node), torch.cat, list(inputs), dim=axis)


def _concat_shape(arrays: list[np.ndarray], axis: int) -> tuple[int, ...]:
    """The shape ``np.concatenate(arrays, axis)`` would have, computed without allocating."""
    rank = arrays[0].ndim
    if rank == 0 or any(a.ndim != rank for a in arrays):
        raise NodeUnsupported("Concat of constants of different ranks")
    axis = normalise_axis(axis, rank)
    return (*arrays[0].shape[:axis], sum(a.shape[axis] for a in arrays),
            *arrays[0].shape[axis + 1:])


def _pad(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    mode = ctx.attrs(node).get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        raise NodeUnsupported(f"Pad mode {mode!r} is not supported (only constant zero)")
    value = optional_input(inputs, 2)
    if value is not None and constant_scalar(value, "the Pad value") != 0.0:
        raise NodeUnsupported("Pad with a non-zero value is not supported")
    if not is_runtime(x):
        raise NodeUnsupported("Pad of a constant is not supported")
    rank = len(shape_of(x))
    pads = constant_ints(inputs[1], "the Pad pads")
    axes = optional_input(inputs, 3)
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


def _reduce_mean(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
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


def _shape(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if is_runtime(x):
        dims = np.array([BATCH, *shape_of(x)[1:]], dtype=object)
    else:
        dims = np.array(np.shape(x), dtype=np.int64)
    attrs = ctx.attrs(node)
    return dims[attrs.get("start", 0):attrs.get("end", len(dims))]


def _gather(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    data, indices = inputs[0], inputs[1]
    if is_runtime(data):
        raise NodeUnsupported("Gather on computed tensors is not supported")
    index = require_constant(indices, "the Gather indices")
    axis = int(ctx.attrs(node).get("axis", 0))
    ctx.check_folded_size(node, (index.size, *np.delete(np.shape(data), axis)))
    return np.take(data, index, axis=axis)


def _cast(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(ctx.attrs(node)["to"]))
    return _cast_to(ctx, node, inputs[0], dtype)


def _cast_like(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    like = inputs[1]
    dtype = np.dtype(np.float32) if is_runtime(like) else np.asarray(like).dtype
    return _cast_to(ctx, node, inputs[0], dtype)


def _cast_to(ctx: ImportContext, node: NodeProto, x: Value | None, dtype: np.dtype) -> Value:
    if is_runtime(x):
        if dtype != np.float32:
            raise NodeUnsupported(f"casting computed tensors to {dtype} is not supported")
        return x  # type: ignore[return-value]
    array = np.asarray(x)
    if array.dtype == object and dtype.kind in "iu":
        return array  # symbolic shapes stay symbolic
    ctx.check_folded_size(node, array.shape, np.dtype(dtype).itemsize)
    return array.astype(dtype)


def _slice(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    data = inputs[0]
    if is_runtime(data):
        raise NodeUnsupported("Slice of computed tensors is not supported")
    array = np.asarray(data)
    starts = constant_ints(inputs[1], "Slice starts")
    ends = constant_ints(inputs[2], "Slice ends")
    axes = optional_input(inputs, 3)
    steps = optional_input(inputs, 4)
    axis_list = list(range(len(starts))) if axes is None else constant_ints(axes, "Slice axes")
    step_list = [1] * len(starts) if steps is None else constant_ints(steps, "Slice steps")
    index = [slice(None)] * array.ndim
    for axis, start, end, step in zip(axis_list, starts, ends, step_list, strict=True):
        index[axis] = slice(start, end, step)
    return array[tuple(index)]


def _expand(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    if is_runtime(inputs[0]):
        raise NodeUnsupported("Expand of computed tensors is not supported")
    array = np.asarray(inputs[0])
    target = np.broadcast_shapes(array.shape, tuple(constant_ints(inputs[1], "Expand shape")))
    ctx.check_folded_size(node, target)
    return np.broadcast_to(array, target).copy()


def _transpose(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    """``torch.permute`` of a runtime tensor that keeps the batch first, e.g. NHWC → NCHW."""
    x, perm = inputs[0], ctx.attrs(node).get("perm")
    if not is_runtime(x):
        return np.transpose(np.asarray(x), perm)
    rank = len(shape_of(x))
    dims = tuple(range(rank))[::-1] if perm is None else tuple(
        normalise_axis(int(axis), rank) for axis in perm)
    if sorted(dims) != list(range(rank)):
        raise NodeUnsupported(f"Transpose perm {list(dims)} is not a permutation of {rank} axes")
    if dims[0] != 0:
        raise NodeUnsupported(f"Transpose perm {list(dims)} would move the batch dimension")
    return ctx.builder.call_function(ctx.name(node), torch.permute, x, dims)


def _constant_of_shape(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    """A filled constant (exporters build pad and shape vectors this way), checked against
    the memory cap before it is allocated."""
    shape = tuple(constant_ints(inputs[0], "the ConstantOfShape shape"))
    attribute = ctx.attrs(node).get("value")
    fill = (onnx.numpy_helper.to_array(attribute) if attribute is not None
            else np.zeros(1, dtype=np.float32))
    if fill.size != 1:
        raise NodeUnsupported(f"ConstantOfShape value must hold one element, not {fill.size}")
    ctx.check_folded_size(node, shape, fill.dtype.itemsize)
    return np.full(shape, fill.reshape(()), dtype=fill.dtype)


def _range(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    start, limit, delta = (require_constant(v, f"the Range {what}")
                           for v, what in zip(inputs, ("start", "limit", "delta"), strict=True))
    step = delta.reshape(()).item()
    if step == 0:
        raise NodeUnsupported("Range with a zero delta")
    count = max(math.ceil((limit.reshape(()).item() - start.reshape(()).item()) / step), 0)
    ctx.check_folded_size(node, (count,), start.dtype.itemsize)
    return start.reshape(()) + np.arange(count, dtype=start.dtype) * delta.reshape(())


SHAPE_HANDLERS: dict[str, Handler] = {
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Pad": _pad,
    "ReduceMean": _reduce_mean,
    "Shape": _shape,
    "Gather": _gather,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Slice": _slice,
    "Expand": _expand,
    "Transpose": _transpose,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
}
