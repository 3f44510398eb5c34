"""Build a torch.fx graph node by node while tracking every node's shape.

Each node is also evaluated on a *meta* tensor (shapes only, no memory, no arithmetic), so
importers can ask for the shape of any runtime value — needed to resolve axes, padding
modes and reshapes — without running the model on real data.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.func import functional_call

PROBE_BATCH = 2
"""Batch size of the shape probe; any value works, 2 makes batch-mixing reshapes visible."""


def sanitise(name: str, fallback: str) -> str:
    """A Python identifier derived from an ONNX name such as ``/layer1/conv/Conv``."""
    cleaned = re.sub(r"\W+", "_", name).strip("_") or fallback
    if cleaned[0].isdigit() or keyword.iskeyword(cleaned):
        cleaned = f"n_{cleaned}"
    return cleaned


class GraphBuilder:
    """Accumulates modules, buffers and nodes; ``finish`` returns the GraphModule."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self._taken: set[str] = set()

    def placeholder(self, name: str, sample_shape: tuple[int, ...]) -> fx.Node:
        node = self.graph.placeholder(self._unique(name))
        node.meta["probe"] = torch.empty((PROBE_BATCH, *sample_shape), device="meta")
        return node

    def call_module(self, name: str, module: nn.Module, *args: Any) -> fx.Node:
        target = self._unique(name)
        self.root.add_module(target, module.eval())
        node = self.graph.call_module(target, args)
        state = {key: value.to("meta") for key, value in module.state_dict().items()}
        node.meta["probe"] = functional_call(module, state, _probes(args))
        return node

    def call_function(self, name: str, function: Callable, *args: Any, **kwargs: Any) -> fx.Node:
        node = self.graph.create_node(
            "call_function", function, args, kwargs, name=self._unique(name)
        )
        node.meta["probe"] = function(*_probes(args), **_probes(kwargs))
        return node

    def buffer(self, name: str, array: np.ndarray) -> fx.Node:
        """A constant tensor held by the module and fetched with ``get_attr``."""
        target = self._unique(name)
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))  # an owned, writable copy
        self.root.register_buffer(target, tensor)
        node = self.graph.get_attr(target)
        node.meta["probe"] = tensor.to("meta")
        return node

    def output(self, node: fx.Node) -> None:
        self.graph.output(node)

    def finish(self, class_name: str) -> fx.GraphModule:
        self.graph.lint()
        module = fx.GraphModule(self.root, self.graph, class_name=class_name)
        return module.float().eval()

    def _unique(self, name: str) -> str:
        candidate, suffix = name, 1
        while candidate in self._taken or hasattr(self.root, candidate):
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        self._taken.add(candidate)
        return candidate


def shape_of(node: fx.Node) -> tuple[int, ...]:
    """The probe shape of a runtime value (dimension 0 is the probe batch)."""
    return tuple(node.meta["probe"].shape)


def _probes(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return value.meta["probe"]
    if isinstance(value, tuple | list):
        return type(value)(_probes(v) for v in value)
    if isinstance(value, dict):
        return {key: _probes(v) for key, v in value.items()}
    return value
