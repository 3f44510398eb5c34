"""Parse an ONNX file as plain protobuf data and refuse what we will not import.

Refused: external tensor data (it would make us read other files), operators or functions
from non-standard domains, opsets outside 13–21, tensors declaring more than the memory cap,
and graphs that fail ONNX's own structural checker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from core.errors import ModelRejected
from core.ingest.limits import DEFAULT_MAX_BYTES, require_file_within_cap, require_within_cap

STANDARD_DOMAINS = ("", "ai.onnx")
MIN_OPSET, MAX_OPSET = 13, 21


def read_onnx(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ModelProto:
    """Parse and validate the ONNX model at ``path``; never loads external data."""
    require_file_within_cap(path.stat().st_size, max_bytes)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelRejected(
            f"the ONNX file could not be parsed; it is truncated or corrupt ({err})",
            code="truncated",
        ) from None
    _refuse_external_data(model.graph)
    _refuse_custom_domains(model)
    _require_supported_opset(model)
    require_within_cap(_declared_bytes(model.graph), max_bytes, "the ONNX model")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelRejected(f"the ONNX model is malformed: {err}", code="malformed") from None
    return model


def default_opset(model: ModelProto) -> int:
    """The version of the standard operator set the model imports."""
    versions = [o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS]
    if not versions:
        raise ModelRejected("the ONNX model imports no standard opset", code="unsupported-opset")
    return max(versions)


def _tensors(graph: GraphProto) -> Iterator[TensorProto]:
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
    if attribute.HasField("sparse_tensor"):
        yield attribute.sparse_tensor.values
        yield attribute.sparse_tensor.indices
    if attribute.HasField("g"):
        yield from _tensors(attribute.g)
    for graph in attribute.graphs:
        yield from _tensors(graph)


def _refuse_external_data(graph: GraphProto) -> None:
    external = [t.name or "(unnamed)" for t in _tensors(graph)
                if t.data_location == TensorProto.EXTERNAL]
    if external:
        raise ModelRejected(
            f"tensors {external[:10]} are stored in external files; re-export the model "
            "with all weights inside the .onnx file (save_as_external_data=False)",
            code="external-data",
        )


def _refuse_custom_domains(model: ModelProto) -> None:
    custom = sorted(
        {o.domain for o in model.opset_import if o.domain not in STANDARD_DOMAINS}
        | {n.domain for n in _all_nodes(model.graph) if n.domain not in STANDARD_DOMAINS}
        | {f.domain for f in model.functions}
    )
    if custom:
        raise ModelRejected(
            f"the model uses non-standard operator domains {custom}; only standard ONNX "
            "operators are accepted",
            code="custom-domain",
            details={"domains": custom},
        )


def _all_nodes(graph: GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def _require_supported_opset(model: ModelProto) -> None:
    opset = default_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelRejected(
            f"the model uses ONNX opset {opset}; supported opsets are {MIN_OPSET}–{MAX_OPSET}. "
            f"Re-export with opset_version={MAX_OPSET - 3} or so",
            code="unsupported-opset",
        )


def _declared_bytes(graph: GraphProto) -> int:
    """Bytes the tensors' dims and dtypes promise, checked before anything is converted."""
    total = 0
    for tensor in _tensors(graph):
        if any(d < 0 for d in tensor.dims):
            raise ModelRejected(f"tensor {tensor.name!r} has negative dims", code="malformed")
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            raise ModelRejected(
                f"tensor {tensor.name!r} has an unknown data type", code="malformed"
            ) from None
        total += itemsize * math.prod(tensor.dims)
    return total
