"""ONNX operators that become ``torch.nn`` layers with weights or windows.

Conv, Gemm, MatMul, BatchNormalization, MaxPool, AveragePool, GlobalAveragePool, Softmax and
LogSoftmax; the weights must be constants (they are copied into the layer).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from onnx import NodeProto
from torch import fx, nn

from core.ingest.fx_builder import shape_of
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_values import (
    NodeUnsupported,
    Value,
    is_runtime,
    normalise_axis,
    require_constant,
)

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}
_BATCH_NORMS: dict[int, type[nn.Module]] = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def _runtime_input(value: Value | None) -> fx.Node:
    if not is_runtime(value):
        raise NodeUnsupported("the layer input must be computed from the model input")
    return value  # type: ignore[return-value]


def _param(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32)), requires_grad=False)


def _explicit_pads(ctx_attrs: dict, x: fx.Node, kernel: list[int], strides: list[int],
                   dilations: list[int]) -> list[int]:
    """ONNX pads [begin..., end...], resolving auto_pad against the input's spatial shape."""
    spatial = len(kernel)
    auto_pad = ctx_attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        return list(ctx_attrs.get("pads", [0] * (2 * spatial)))
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    sizes = shape_of(x)[2:]
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _split_pads(pads: list[int]) -> tuple[list[int], list[int]]:
    half = len(pads) // 2
    return pads[:half], pads[half:]


def _torch_pad_order(begins: list[int], ends: list[int]) -> tuple[int, ...]:
    """F.pad wants (last_begin, last_end, second_last_begin, ...)."""
    return tuple(p for b, e in zip(reversed(begins), reversed(ends), strict=True) for p in (b, e))


def _zero_pad(ctx: ImportContext, node: NodeProto, x: fx.Node, begins: list[int],
              ends: list[int]) -> fx.Node:
    """Explicit zero padding for pads the torch layer cannot express (asymmetric)."""
    return ctx.builder.call_function(f"{ctx.name(node)}_pad", F.pad, x,
                                     _torch_pad_order(begins, ends))


def _conv(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    weight = require_constant(inputs[1], "the Conv weight")
    bias = None
    if len(inputs) > 2 and inputs[2] is not None:
        bias = require_constant(inputs[2], "the Conv bias")
    spatial = weight.ndim - 2
    if spatial not in _CONVS:
        raise NodeUnsupported(f"{spatial}-D convolution is not supported")
    attrs = ctx.attrs(node)
    kernel = list(weight.shape[2:])
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    begins, ends = _split_pads(_explicit_pads(attrs, x, kernel, strides, dilations))
    if begins != ends:
        x = _zero_pad(ctx, node, x, begins, ends)
        begins = [0] * spatial
    groups = int(attrs.get("group", 1))
    layer = _CONVS[spatial](
        weight.shape[1] * groups, weight.shape[0], kernel, stride=strides, padding=begins,
        dilation=dilations, groups=groups, bias=bias is not None,
    )
    layer.weight = _param(weight)
    if bias is not None:
        layer.bias = _param(bias)
    return ctx.builder.call_module(ctx.name(node), layer, x)


def _linear(ctx: ImportContext, node: NodeProto, x: fx.Node, weight: np.ndarray,
            bias: np.ndarray | None) -> fx.Node:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = _param(weight)
    if bias is not None:
        layer.bias = _param(bias)
    return ctx.builder.call_module(ctx.name(node), layer, x)


def _gemm(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    attrs = ctx.attrs(node)
    if attrs.get("transA", 0):
        raise NodeUnsupported("Gemm with transA=1 would transpose the batch")
    b = require_constant(inputs[1], "the Gemm weight B")
    weight = float(attrs.get("alpha", 1.0)) * (b if attrs.get("transB", 0) else b.T)
    bias = None
    if len(inputs) > 2 and inputs[2] is not None:
        c = require_constant(inputs[2], "the Gemm bias C")
        bias = float(attrs.get("beta", 1.0)) * per_feature(c, weight.shape[0])
    return _linear(ctx, node, x, weight, bias)


def per_feature(constant: np.ndarray, features: int) -> np.ndarray:
    """A bias that broadcasts over the last axis only, as a vector of ``features``."""
    if constant.size == 1:
        return np.full(features, float(constant.reshape(())), dtype=np.float32)
    if constant.shape[-1] == features and constant.size == features:
        return constant.reshape(features)
    raise NodeUnsupported(f"bias of shape {constant.shape} does not broadcast per feature")


def _matmul_shape(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``np.matmul`` of constants of these shapes, computed without allocating."""
    if not left or not right:
        raise NodeUnsupported("MatMul of a scalar")
    a = (1, *left) if len(left) == 1 else left
    b = (*right, 1) if len(right) == 1 else right
    if a[-1] != b[-2]:
        raise NodeUnsupported(f"MatMul of shapes {left} and {right}")
    shape = (*np.broadcast_shapes(a[:-2], b[:-2]), a[-2], b[-1])
    if len(left) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(right) == 1:
        shape = shape[:-1]
    return shape


def _matmul(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    a, b = inputs[0], inputs[1]
    if not is_runtime(a) and not is_runtime(b):
        left, right = require_constant(a, "MatMul A"), require_constant(b, "MatMul B")
        ctx.check_folded_size(node, _matmul_shape(left.shape, right.shape))
        return np.matmul(left, right)
    x = _runtime_input(a)
    weight = require_constant(b, "the MatMul weight (second input)")
    if weight.ndim != 2:
        raise NodeUnsupported(f"MatMul weight of rank {weight.ndim} is not supported")
    result = _linear(ctx, node, x, weight.T, None)
    result.meta["bias_free_linear"] = True
    return result


def _batch_norm(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    attrs = ctx.attrs(node)
    if attrs.get("training_mode", 0):
        raise NodeUnsupported("BatchNormalization in training mode (export the model in eval)")
    scale, shift, mean, var = (require_constant(v, "BatchNormalization statistics")
                               for v in inputs[1:5])
    rank = len(shape_of(x))
    if rank not in _BATCH_NORMS:
        raise NodeUnsupported(f"BatchNormalization on rank-{rank} tensors is not supported")
    layer = _BATCH_NORMS[rank](scale.shape[0], eps=float(attrs.get("epsilon", 1e-5)))
    layer.weight, layer.bias = _param(scale), _param(shift)
    layer.running_mean.copy_(torch.from_numpy(np.array(mean, dtype=np.float32)))
    layer.running_var.copy_(torch.from_numpy(np.array(var, dtype=np.float32)))
    return ctx.builder.call_module(ctx.name(node), layer, x)


def _window(ctx: ImportContext, node: NodeProto, x: fx.Node) -> tuple[dict, list, list, list]:
    attrs = ctx.attrs(node)
    kernel = list(attrs["kernel_shape"])
    if len(kernel) != 2 or len(shape_of(x)) != 4:
        raise NodeUnsupported("only 2-D pooling is supported")
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    return attrs, kernel, strides, _explicit_pads(attrs, x, kernel, strides, dilations)


def _require_torch_padding(begins: list[int], ends: list[int], kernel: list[int]) -> None:
    if begins != ends:
        raise NodeUnsupported(f"asymmetric pooling pads {begins + ends} are not supported")
    if any(2 * p > k for p, k in zip(begins, kernel, strict=True)):
        raise NodeUnsupported(f"pooling pads {begins} exceed half the kernel {kernel}")


def _max_pool(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    attrs, kernel, strides, pads = _window(ctx, node, x)
    begins, ends = _split_pads(pads)
    _require_torch_padding(begins, ends, kernel)
    layer = nn.MaxPool2d(kernel, stride=strides, padding=begins,
                         dilation=list(attrs.get("dilations", [1, 1])),
                         ceil_mode=bool(attrs.get("ceil_mode", 0)))
    return ctx.builder.call_module(ctx.name(node), layer, x)


def _average_pool(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    attrs, kernel, strides, pads = _window(ctx, node, x)
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise NodeUnsupported("dilated average pooling is not supported")
    begins, ends = _split_pads(pads)
    count_pad = bool(attrs.get("count_include_pad", 0))
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    if begins != ends and count_pad and not ceil_mode:
        # Zero padding counted in the average is the same as padding the input with zeros.
        x = _zero_pad(ctx, node, x, begins, ends)
        begins = ends = [0, 0]
    _require_torch_padding(begins, ends, kernel)
    layer = nn.AvgPool2d(kernel, stride=strides, padding=begins, ceil_mode=ceil_mode,
                         count_include_pad=count_pad)
    return ctx.builder.call_module(ctx.name(node), layer, x)


def _global_average_pool(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    x = _runtime_input(inputs[0])
    rank = len(shape_of(x))
    pools = {3: nn.AdaptiveAvgPool1d, 4: nn.AdaptiveAvgPool2d}
    if rank not in pools:
        raise NodeUnsupported(f"GlobalAveragePool on rank-{rank} tensors is not supported")
    return ctx.builder.call_module(ctx.name(node), pools[rank](1), x)


def _softmax_like(layer_type: type[nn.Module]) -> Handler:
    def handler(ctx: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
        x = _runtime_input(inputs[0])
        axis = normalise_axis(int(ctx.attrs(node).get("axis", -1)), len(shape_of(x)))
        if axis == 0:
            raise NodeUnsupported("softmax across the batch is not supported")
        return ctx.builder.call_module(ctx.name(node), layer_type(dim=axis), x)

    return handler


LAYER_HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "Softmax": _softmax_like(nn.Softmax),
    "LogSoftmax": _softmax_like(nn.LogSoftmax),
}
