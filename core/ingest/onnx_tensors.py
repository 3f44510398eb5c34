"""The tensors an ONNX graph stores and the bytes each declares.

Shared by the file checks and the external-data reader, so both walk the same tensors (subgraphs
and sparse parts included) and size them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, GraphProto, TensorProto

from core.errors import ModelRejected


def stored_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in ``graph``: initializers and constant attributes, subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute)


def _attribute_tensors(attribute: AttributeProto) -> Iterator[TensorProto]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
    for tensor in (*sparse, *attribute.sparse_tensors):
        yield tensor.values
        yield tensor.indices
    if attribute.HasField("g"):
        yield from stored_tensors(attribute.g)
    for graph in attribute.graphs:
        yield from stored_tensors(graph)


def tensor_name(tensor: TensorProto) -> str:
    return tensor.name or "(unnamed)"


def declared_nbytes(tensor: TensorProto) -> int:
    """Bytes the tensor's dims and dtype promise, known before any of its data is read."""
    if any(d < 0 for d in tensor.dims):
        raise ModelRejected(f"tensor {tensor_name(tensor)!r} has negative dims", code="malformed")
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        raise ModelRejected(
            f"tensor {tensor_name(tensor)!r} has an unknown data type", code="malformed"
        ) from None
    return itemsize * math.prod(tensor.dims)
