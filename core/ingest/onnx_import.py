"""Translate a validated ONNX graph into a torch.fx GraphModule of ordinary torch modules.

Written for this project (not onnx2torch) so that the resulting graph uses exactly the
vocabulary the conversion passes match on, names nodes after their ONNX names, and keeps
the batch dimension dynamic (the simulator runs the graph with batch T·B).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto
from torch import fx

from core.errors import ModelRejected
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_file import default_opset
from core.ingest.onnx_layers import LAYER_HANDLERS
from core.ingest.onnx_tensor_ops import TENSOR_HANDLERS
from core.ingest.onnx_values import NodeUnsupported, Value, is_runtime

HANDLERS: dict[str, Handler] = {**LAYER_HANDLERS, **TENSOR_HANDLERS}


def supported_ops() -> list[str]:
    """The ONNX operator types the importer understands."""
    return sorted(HANDLERS)


def import_onnx(model: ModelProto, max_bytes: int) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """The model as an evaluated float32 GraphModule, and one sample's input shape."""
    graph = model.graph
    _refuse_unknown_ops(graph.node)
    context = ImportContext(graph, default_opset(model))
    values: dict[str, Value] = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    model_input = _single_input(model, values)
    sample_shape = _sample_shape(model_input, max_bytes)
    values[model_input.name] = context.builder.placeholder("x", sample_shape)
    for node in graph.node:
        _import_node(context, node, values)
    context.builder.output(_single_output(model, values))
    return context.builder.finish("ImportedOnnxModel"), sample_shape


def _node_label(node: NodeProto) -> str:
    return f"{node.op_type} ({node.name or 'unnamed'})"


def _refuse_unknown_ops(nodes: list[NodeProto]) -> None:
    unknown = [_node_label(node) for node in nodes if node.op_type not in HANDLERS]
    if unknown:
        raise ModelRejected(
            f"the model uses operators the importer does not support: {', '.join(unknown)}. "
            f"Supported: {', '.join(supported_ops())}",
            code="unsupported-ops",
            details={"nodes": unknown},
        )


def _import_node(context: ImportContext, node: NodeProto, values: dict[str, Value]) -> None:
    try:
        inputs = [values[name] if name else None for name in node.input]
    except KeyError as err:
        raise ModelRejected(
            f"node {_node_label(node)} reads {err.args[0]!r}, which nothing defines",
            code="malformed",
        ) from None
    try:
        for extra in node.output[1:]:
            if extra and context.uses(extra):
                raise NodeUnsupported(f"its extra output {extra!r} is used")
        result = HANDLERS[node.op_type](context, node, inputs)
    except NodeUnsupported as err:
        raise ModelRejected(
            f"the model uses operators the importer does not support: {_node_label(node)}: {err}",
            code="unsupported-ops",
            details={"nodes": [_node_label(node)]},
        ) from None
    values[node.output[0]] = result


def _single_input(model: ModelProto, values: dict[str, Value]) -> ValueInfoProto:
    inputs = [i for i in model.graph.input if i.name not in values]
    if len(inputs) != 1:
        raise ModelRejected(
            f"the model has {len(inputs)} inputs; exactly one image/feature input is supported",
            code="unsupported-io",
        )
    return inputs[0]


def _sample_shape(model_input: ValueInfoProto, max_bytes: int) -> tuple[int, ...]:
    tensor_type = model_input.type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelRejected("the model input must be float32", code="unsupported-io")
    dims = list(tensor_type.shape.dim)
    sample = tuple(d.dim_value for d in dims[1:])
    if len(dims) < 2 or any(size <= 0 for size in sample):
        raise ModelRejected(
            "the model input needs a batch dimension followed by fixed sizes, "
            f"e.g. [N, 1, 28, 28]; got {[d.dim_value or d.dim_param or '?' for d in dims]}",
            code="unsupported-io",
        )
    if 4 * math.prod(sample) > max_bytes:
        raise ModelRejected("one input sample would exceed the memory cap", code="too-large")
    return sample


def _single_output(model: ModelProto, values: dict[str, Value]) -> fx.Node:
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        raise ModelRejected(
            f"the model has {len(outputs)} outputs; exactly one (the class scores) is supported",
            code="unsupported-io",
        )
    result = values.get(outputs[0].name)
    if not is_runtime(result):
        kind = "undefined" if result is None else f"constant {np.shape(result)}"
        raise ModelRejected(f"the model output is {kind}", code="unsupported-io")
    return result  # type: ignore[return-value]
