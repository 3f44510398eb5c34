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

from core.errors import ModelRejected, TooLarge, rectifier_advice
from core.ingest.onnx_context import Handler, ImportContext
from core.ingest.onnx_elementwise import ELEMENTWISE_HANDLERS
from core.ingest.onnx_layers import LAYER_HANDLERS
from core.ingest.onnx_shape_ops import SHAPE_HANDLERS
from core.ingest.onnx_values import NodeUnsupported, Value, is_runtime

HANDLERS: dict[str, Handler] = {**LAYER_HANDLERS, **ELEMENTWISE_HANDLERS, **SHAPE_HANDLERS}
NON_RECTIFIER_OPS = {
    "Gelu": "GELU", "Erf": "GELU", "Sigmoid": "Sigmoid/SiLU", "Tanh": "Tanh",
    "HardSigmoid": "Hardsigmoid/Hardswish", "HardSwish": "Hardswish", "LeakyRelu": "LeakyReLU",
    "PRelu": "PReLU", "Elu": "ELU", "Selu": "SELU", "Celu": "CELU", "Softplus": "Softplus",
    "Softsign": "Softsign", "Mish": "Mish", "ThresholdedRelu": "ThresholdedReLU",
}
"""Activation operators that no spiking neuron represents, with the PyTorch layers they come
from (GELU exports as Erf before opset 20, SiLU as Sigmoid·x)."""
_FAILED = object()  # the value of an output whose node could not be imported
_UNDEFINED = object()  # a name that no initializer, input or earlier node defines


def supported_ops() -> list[str]:
    """The ONNX operator types the importer understands."""
    return sorted(HANDLERS)


def import_onnx(model: ModelProto, max_bytes: int) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """The model as an evaluated float32 GraphModule, and one sample's input shape."""
    graph = model.graph
    context = ImportContext(graph, max_bytes)
    values: dict[str, Value] = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    model_input = _single_input(model, values)
    sample_shape = _sample_shape(model_input, max_bytes)
    values[model_input.name] = context.builder.placeholder("x", sample_shape)
    failures = [problem for node in graph.node
                if (problem := _import_node(context, node, values)) is not None]
    if failures:
        raise ModelRejected(
            f"the model uses operators the importer does not support: {'; '.join(failures)}. "
            f"{_advice(graph)}Supported operators: {', '.join(supported_ops())}",
            code="unsupported-ops",
            details={"nodes": failures},
        )
    context.builder.output(_single_output(model, values))
    return context.builder.finish("ImportedOnnxModel"), sample_shape


def _node_label(node: NodeProto) -> str:
    return f"{node.op_type} ({node.name or 'unnamed'})"


def _import_node(context: ImportContext, node: NodeProto, values: dict[str, Value]) -> str | None:
    """Add ``node`` to the graph; return why it cannot be imported, or None.

    Import goes on after a failure so that the user learns about every offending node at
    once; nodes downstream of a failure are skipped without blame (their inputs are gone).
    """
    unknown = node.op_type not in HANDLERS
    inputs = [values.get(name, _UNDEFINED) if name else None for name in node.input]
    if node.op_type in NON_RECTIFIER_OPS:
        return _refuse_activation(node, inputs, values)
    if unknown or any(value is _FAILED for value in inputs):
        values.update(dict.fromkeys(node.output, _FAILED))
        return _node_label(node) if unknown else None
    if any(value is _UNDEFINED for value in inputs):
        raise ModelRejected(f"node {_node_label(node)} reads a value nothing defines",
                            code="malformed")
    try:
        values[node.output[0]] = _run_handler(context, node, inputs)
    except NodeUnsupported as err:
        values.update(dict.fromkeys(node.output, _FAILED))
        return f"{_node_label(node)}: {err}"
    return None


def _refuse_activation(node: NodeProto, inputs: list[Value | None],
                       values: dict[str, Value]) -> str:
    """Blame an activation no neuron represents, even downstream of another failure.

    Its input stands in for its output (the op keeps the shape), so the import goes on and
    a second GELU or SiLU later in the network is named too, not skipped.
    """
    stand_in = inputs[0] if inputs and is_runtime(inputs[0]) else _FAILED
    values.update(dict.fromkeys(node.output, stand_in))
    return _node_label(node)


def _advice(graph: onnx.GraphProto) -> str:
    """What to change when the refused operators include non-rectifier activations."""
    kinds = {NON_RECTIFIER_OPS[n.op_type] for n in graph.node if n.op_type in NON_RECTIFIER_OPS}
    return f"To convert it, {rectifier_advice(kinds)}. " if kinds else ""


def _run_handler(context: ImportContext, node: NodeProto, inputs: list[Value | None]) -> Value:
    for extra in node.output[1:]:
        if extra and context.uses(extra):
            raise NodeUnsupported(f"its extra output {extra!r} is used")
    try:
        result = HANDLERS[node.op_type](context, node, inputs)
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as err:
        # Malformed attributes or shapes that do not fit: blame the node, never crash.
        raise NodeUnsupported(f"cannot be imported ({type(err).__name__}: {err})") from None
    result = result if is_runtime(result) else np.asarray(result)
    context.account(node, result)
    return result


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
        raise TooLarge("one input sample would exceed the memory cap")
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
