"""What an ONNX operator handler needs to know about the graph being imported."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import GraphProto, NodeProto
from torch import fx

from core.ingest.fx_builder import GraphBuilder, sanitise, shape_of
from core.ingest.limits import require_activation_within, require_folding_within
from core.ingest.onnx_values import BATCH, NodeUnsupported, Value, require_constant

Handler = Callable[["ImportContext", NodeProto, list[Value | None]], Value]


class ImportContext:
    """Per-import state shared by operator handlers: the graph builder, use counts and the
    memory cap that bounds constant folding (each folded constant, and all of them together)."""

    def __init__(self, graph: GraphProto, max_bytes: int) -> None:
        self.builder = GraphBuilder()
        self.max_bytes = max_bytes
        self.folded_bytes = 0
        self._uses = Counter(name for node in graph.node for name in node.input if name)
        self._uses.update(output.name for output in graph.output)

    def uses(self, value_name: str) -> int:
        """How many node inputs and graph outputs read ``value_name``."""
        return self._uses[value_name]

    @staticmethod
    def attrs(node: NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    @staticmethod
    def name(node: NodeProto) -> str:
        """The fx name for ``node``: its sanitised ONNX name, else its op type."""
        return sanitise(node.name, node.op_type.lower())

    def operand(self, node: NodeProto, constant: Value | None, partner: fx.Node,
                allow_float: bool = True) -> float | fx.Node:
        """A constant operand of an elementwise op: a float if scalar, else a buffer."""
        array = require_constant(constant, "the constant operand")
        rank = len(shape_of(partner))
        if allow_float and array.size == 1 and array.ndim <= rank:
            return float(array.reshape(()))
        if array.ndim > rank or (array.ndim == rank and array.shape[0] != 1):
            raise NodeUnsupported(
                f"constant operand of shape {array.shape} spans the batch dimension"
            )
        return self.builder.buffer(f"{self.name(node)}_const", array)

    def batch_reshape(self, node: NodeProto, x: fx.Node, target: list) -> fx.Node:
        """``torch.reshape`` to ``target`` whose first entry is the (dynamic) batch slot.

        Exporters often bake the export batch into shape constants ([1, 512], [N, -1]);
        entry 0 is read as "the batch" whatever it says, and the rest must hold one sample.
        """
        sample = shape_of(x)[1:]
        rest = list(target[1:])
        if not target or any(entry is BATCH for entry in rest):
            raise NodeUnsupported("reshape would move the batch dimension")
        rest = [sample[i] if entry == 0 and i < len(sample) else int(entry)
                for i, entry in enumerate(rest)]
        if rest.count(-1) > 1:
            raise NodeUnsupported(f"reshape target {list(target)} has more than one -1")
        known = math.prod(d for d in rest if d != -1)
        per_sample = math.prod(sample)
        if -1 in rest and known and per_sample % known == 0:
            rest = [per_sample // known if d == -1 else d for d in rest]
        if -1 in rest or math.prod(rest) != per_sample:
            raise NodeUnsupported(
                f"reshape of a sample of shape {sample} to {list(target)} would mix samples "
                "of the batch"
            )
        return self.builder.call_function(self.name(node), torch.reshape, x, (-1, *rest))

    def check_folded_size(self, node: NodeProto, shape: tuple[int, ...],
                          itemsize: int = 8) -> None:
        """Refuse, before allocating it, a folded constant that would exceed the memory cap.

        A file of a few bytes can ask for a huge tensor (``ConstantOfShape([1 << 40])``), so
        the size is checked against the same cap as the tensors the file declares, alone and
        together with every constant folded before it.
        """
        if any(int(d) < 0 for d in shape):
            raise NodeUnsupported(f"constant folding to the negative shape {tuple(shape)}")
        size = itemsize * math.prod(int(d) for d in shape)
        require_folding_within(size, self.max_bytes, _folding_of(node))
        require_folding_within(self.folded_bytes + size, self.max_bytes, _after_earlier(node))

    def account(self, node: NodeProto, result: object) -> None:
        """Check what ``node`` produced: a runtime tensor's per-sample size, and the bytes
        of every constant folded so far (each op's output is checked before it is
        allocated; this bounds a chain of ops that are each under the cap)."""
        if isinstance(result, fx.Node):
            require_activation_within(shape_of(result)[1:], _label(node))
        elif (isinstance(result, np.ndarray) and result.dtype != object
              and result.flags.owndata and node.op_type != "Constant"):
            self.folded_bytes += result.nbytes
            require_folding_within(self.folded_bytes, self.max_bytes, _after_earlier(node))


def _label(node: NodeProto) -> str:
    return f"{node.op_type} ({node.name or 'unnamed'})"


def _folding_of(node: NodeProto) -> str:
    return f"constant folding of {_label(node)}"


def _after_earlier(node: NodeProto) -> str:
    return f"{_folding_of(node)}, with the constants folded before it,"
