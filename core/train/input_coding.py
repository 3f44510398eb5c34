"""Put an input coding for low latency (``VREncode`` or ICE's ``ICEExpand``, both in
core/graph/modules.py) in front of a network, widening its first layer for ICE."""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from core.errors import UnsupportedModel
from core.graph import patterns as P

_PASS_THROUGH_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_THROUGH_FUNCTIONS = {torch.flatten}
_PASS_THROUGH_METHODS = {"flatten", "view", "reshape"}


def _first_weighted_layer(graph_module: fx.GraphModule, start: fx.Node) -> fx.Node:
    """Follow the single path from the input through shape-only ops to the first conv/linear."""
    node = start
    while True:
        if len(node.users) != 1:
            raise UnsupportedModel(
                "input channel expansion needs the input to feed exactly one conv/linear layer; "
                f"'{node.name}' has {len(node.users)} users — use VR encoding instead"
            )
        node = next(iter(node.users))
        module = P.module_of(graph_module, node)
        if isinstance(module, nn.Conv2d | nn.Linear):
            return node
        passes = (
            isinstance(module, _PASS_THROUGH_MODULES)
            or P.is_function(node, _PASS_THROUGH_FUNCTIONS)
            or P.is_method(node, _PASS_THROUGH_METHODS)
        )
        if not passes:
            raise UnsupportedModel(
                f"input channel expansion cannot widen the first layer: '{node.name}' comes "
                "between the input and the first Conv2d/Linear module"
            )


def _widened(layer: nn.Conv2d | nn.Linear, expansion: int) -> nn.Module:
    """``layer`` with its input dimension repeated ``expansion`` times, weights shared equally.

    The expanded channels are whole copies of the C input channels stacked along dim 1, so
    both a conv's channel axis and a channel-major flatten see the original weight tiled
    ``expansion`` times; dividing by ``expansion`` makes the sum the original response to the
    average of the copies.
    """
    widened = copy.deepcopy(layer)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise UnsupportedModel("input channel expansion needs an ungrouped first convolution")
        widened.in_channels = layer.in_channels * expansion
        tiling = (1, expansion, 1, 1)
    else:
        widened.in_features = layer.in_features * expansion
        tiling = (1, expansion)
    widened.weight = nn.Parameter(layer.weight.detach().repeat(*tiling) / expansion)
    return widened


def with_input_coding(model: fx.GraphModule, encoder: nn.Module,
                      widen: bool = True) -> fx.GraphModule:
    """A new GraphModule that applies ``encoder`` to its input first.

    When the encoder widens the input (``encoder.expansion`` > 1, ICE), the first Conv2d or
    Linear is widened to match; at initialisation it computes approximately the original
    function (exactly the original on the mean of the expanded channels).  ``model`` is not
    modified.  ``widen=False`` is for a first layer trained on the expanded input already
    (an uploaded ICE network whose coding was split off).
    """
    graph_module = copy.deepcopy(model)
    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModel(f"expected one model input, found {len(placeholders)}")
    source = placeholders[0]
    expansion = int(getattr(encoder, "expansion", 1))
    if expansion > 1 and widen:
        first = _first_weighted_layer(graph_module, source)
        layer = graph_module.get_submodule(first.target)
        graph_module.add_submodule(first.target, _widened(layer, expansion))
    P.insert_module_after(graph_module, source, copy.deepcopy(encoder), "input_encoder")
    return P.finish(graph_module, prune=False)
