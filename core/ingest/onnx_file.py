"""Parse an ONNX file as plain protobuf data and refuse what we will not import.

External tensor data is read only from plain files beside the .onnx file (see
``onnx_external``).  Refused: graphs of more than ``MAX_GRAPH_NODES`` nodes, operators or
functions from non-standard domains, opsets outside 13–21, tensors declaring more than the
memory cap, and graphs that fail ONNX's own structural checker.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto

from core.errors import ModelRejected
from core.ingest.limits import (
    DEFAULT_MAX_BYTES,
    MAX_GRAPH_NODES,
    require_file_within_cap,
    require_node_count_within,
    require_within_cap,
)
from core.ingest.onnx_external import internalise_external_data
from core.ingest.onnx_tensors import declared_nbytes, stored_tensors

STANDARD_DOMAINS = ("", "ai.onnx")
MIN_OPSET, MAX_OPSET = 13, 21


def read_onnx(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ModelProto:
    """Parse and validate the ONNX model at ``path``, external data from its folder included.

    The returned model is self-contained: every external tensor's bytes are in ``raw_data``.
    """
    require_file_within_cap(path.stat().st_size, max_bytes)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelRejected(
            f"the ONNX file could not be parsed; it is truncated or corrupt ({err})",
            code="truncated",
        ) from None
    # Counted first: every later step (checker, import, canonicalisation) is per node.
    require_node_count_within(sum(1 for _ in islice(_all_nodes(model.graph),
                                                    MAX_GRAPH_NODES + 1)))
    _refuse_custom_domains(model)
    _require_supported_opset(model)
    internalise_external_data(stored_tensors(model.graph), path.parent, max_bytes)
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
    return sum(declared_nbytes(tensor) for tensor in stored_tensors(graph))
