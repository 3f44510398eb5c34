"""Elementwise ONNX operators: arithmetic, ReLU, clamping, floor, and pass-throughs.

On constants they are folded with numpy at import time; on runtime tensors they become the
canonical calls the graph passes match on (``torch.add(x, c)``, ``torch.clamp(x, min=, max=)``,
``nn.ReLU``...).  A CQ activation ``floor(clamp(x, 0, m) * L) / L`` stays four nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import NodeProto
from torch import nn

from core.ingest.fx_builder import shape_of
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_layers import per_feature
from core.ingest.onnx_values import (
    NodeUnsupported,
    Value,
    constant_scalar,
    is_runtime,
    optional_input,
    require_constant,
)


def _numpy_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return np.floor_divide(a, b)  # shape arithmetic: positive integers
    return np.divide(a, b)


def _binary(function: Callable, fold: Callable, commutative: bool) -> Handler:
    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        (a, a_name), (b, b_name) = zip(inputs[:2], node.input[:2], strict=True)
        if not is_runtime(a) and not is_runtime(b):
            shape = np.broadcast_shapes(a.shape, b.shape)  # type: ignore[union-attr]
            ctx.check_folded_size(node, shape)
            return np.asarray(fold(a, b))
        if is_runtime(a) and is_runtime(b):
            return ctx.builder.call_function(ctx.name(node), function, a, b)
        if commutative and not is_runtime(a):  # canonical order: tensor ⊕ constant
            (a, a_name), (b, b_name) = (b, b_name), (a, a_name)
        if function is torch.add and _fusable_bias(ctx, a, a_name, b):
            return a
        if is_runtime(a):
            return ctx.builder.call_function(ctx.name(node), function, a, ctx.operand(node, b, a))
        constant = ctx.operand(node, a, b, allow_float=False)
        return ctx.builder.call_function(ctx.name(node), function, constant, b)

    return handler


def _fusable_bias(ctx: ImportContext, x: Value | None, x_name: str, bias: Value | None) -> bool:
    """MatMul followed by Add of a per-feature constant is one ``nn.Linear``: fuse it."""
    if not is_runtime(x) or not x.meta.get("bias_free_linear") or ctx.uses(x_name) != 1:
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


def _clamp(ctx: ImportContext, node: NodeProto, x: Value | None, x_name: str,
           low: float | None, high: float | None) -> Value:
    """``torch.clamp``; a Max then Min pair (how some exporters write clamp) becomes one node."""
    if not is_runtime(x):
        return np.clip(require_constant(x, "the clamp input"), low, high)
    bounds = {key: value for key, value in (("min", low), ("max", high)) if value is not None}
    if not bounds:
        return x
    if (x.target is torch.clamp and ctx.uses(x_name) == 1
            and not set(bounds) & set(x.kwargs)):
        x.kwargs = {**x.kwargs, **bounds}
        return x
    return ctx.builder.call_function(ctx.name(node), torch.clamp, x, **bounds)


def _clip(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    attrs = ctx.attrs(node)
    low_input, high_input = optional_input(inputs, 1), optional_input(inputs, 2)
    low = constant_scalar(low_input, "Clip min") if low_input is not None else attrs.get("min")
    high = constant_scalar(high_input, "Clip max") if high_input is not None else attrs.get("max")
    return _clamp(ctx, node, inputs[0], node.input[0], low, high)


def _min_max(bound: str) -> Handler:
    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        if len(inputs) != 2:
            raise NodeUnsupported(f"{node.op_type} of {len(inputs)} inputs is not supported")
        runtime = [i for i, v in enumerate(inputs) if is_runtime(v)]
        if not runtime:
            fold = np.maximum if bound == "min" else np.minimum
            arrays = [require_constant(v, "operand") for v in inputs]
            ctx.check_folded_size(node, np.broadcast_shapes(*(a.shape for a in arrays)))
            return fold(*arrays)
        if len(runtime) == 2:
            raise NodeUnsupported(f"{node.op_type} of two computed tensors is not supported")
        index = runtime[0]
        limit = constant_scalar(inputs[1 - index], f"the {node.op_type} constant")
        bounds = (limit, None) if bound == "min" else (None, limit)
        return _clamp(ctx, node, inputs[index], node.input[index], *bounds)

    return handler


def _folded(fold: Callable) -> Handler:
    """An op folded with numpy when every input is a constant (shape and pad arithmetic:
    Equal, Where, Not...); on computed tensors it has no spiking meaning, so it is refused."""

    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        if any(is_runtime(v) or v is None for v in inputs):
            raise NodeUnsupported(f"{node.op_type} of computed tensors is not supported")
        arrays = [np.asarray(v) for v in inputs]
        ctx.check_folded_size(node, np.broadcast_shapes(*(a.shape for a in arrays)))
        return np.asarray(fold(*arrays))

    return handler


def _neg(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if not is_runtime(x):
        return np.negative(require_constant(x, "the Neg input"))
    return ctx.builder.call_function(ctx.name(node), torch.mul, x, -1.0)


def _floor(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if not is_runtime(x):
        return np.floor(require_constant(x, "the Floor input"))
    return ctx.builder.call_function(ctx.name(node), torch.floor, x)


def _relu(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = inputs[0]
    if not is_runtime(x):
        return np.maximum(require_constant(x, "the Relu input"), 0)
    return ctx.builder.call_module(ctx.name(node), nn.ReLU(), x)


def _passthrough(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    return inputs[0]  # type: ignore[return-value]


def _dropout(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    """Inference-mode dropout is the identity; a constant ``training_mode=True`` is not."""
    training = optional_input(inputs, 2)
    if training is not None and bool(require_constant(training, "Dropout training_mode").any()):
        raise NodeUnsupported("Dropout in training mode")
    return inputs[0]  # type: ignore[return-value]


def _constant(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    attrs = ctx.attrs(node)
    if "value" in attrs:
        return onnx.numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    raise NodeUnsupported("only numeric Constant values are supported")


ELEMENTWISE_HANDLERS: dict[str, Handler] = {
    "Add": _binary(torch.add, np.add, commutative=True),
    "Sub": _binary(torch.sub, np.subtract, commutative=False),
    "Mul": _binary(torch.mul, np.multiply, commutative=True),
    "Div": _binary(torch.div, _numpy_divide, commutative=False),
    "Relu": _relu,
    "Clip": _clip,
    "Max": _min_max("min"),
    "Min": _min_max("max"),
    "Floor": _floor,
    "Identity": _passthrough,
    "Dropout": _dropout,
    "Constant": _constant,
    "Neg": _neg,
    "Equal": _folded(np.equal),
    "Greater": _folded(np.greater),
    "GreaterOrEqual": _folded(np.greater_equal),
    "Less": _folded(np.less),
    "LessOrEqual": _folded(np.less_equal),
    "Not": _folded(np.logical_not),
    "And": _folded(np.logical_and),
    "Or": _folded(np.logical_or),
    "Where": _folded(np.where),
}
