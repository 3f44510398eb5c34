"""Rewrite a ReLU network into its CQ form (the graph the paper trains and converts), or into
its QCFS form (the qcfs method's).

Every pass returns a new GraphModule; the caller's model is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import fx, nn

from core.errors import UnsupportedModel
from core.graph import patterns as P
from core.graph.analysis import is_activation, is_cq
from core.graph.canonicalize import recognise_activations
from core.graph.modules import ClampedReLU, CQActivation, QCFSActivation

_AVG_POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_AVG_POOL_FUNCTIONS = {F.avg_pool2d, F.adaptive_avg_pool2d}


def _is_avg_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(P.module_of(gm, node), _AVG_POOL_MODULES) \
        or P.is_function(node, _AVG_POOL_FUNCTIONS)


def _feeds_spiking_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a spiking layer (an activation) lies downstream of ``node``.

    A pool from which only linear layers lead to the output (global pooling → classifier) is
    part of the readout: the output layer integrates its current without spiking, so it is
    not quantised.  Quantising it would at T = 1 turn every global average below m into 0.
    """
    return P.reaches(node, hit=lambda current: is_activation(P.module_of(gm, current)))


def _undilated(dilation) -> bool:
    """Dilation 1 however it is spelled: 1, (1, 1) or [1, 1] (as imported from ONNX)."""
    values = dilation if isinstance(dilation, list | tuple) else [dilation]
    return all(value == 1 for value in values)


def _average_pool_for(max_pool: nn.Module) -> nn.Module:
    if isinstance(max_pool, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(max_pool.output_size)
    dilation = max_pool.dilation
    if not _undilated(dilation):
        raise UnsupportedModel(
            f"max pooling with dilation {dilation} has no average-pooling equivalent; "
            "use a model with undilated pooling"
        )
    return nn.AvgPool2d(
        max_pool.kernel_size,
        stride=max_pool.stride,
        padding=max_pool.padding,
        ceil_mode=max_pool.ceil_mode,
        count_include_pad=True,
    )


def _replace_max_pools(graph_module: fx.GraphModule) -> None:
    for node in list(graph_module.graph.nodes):
        module = P.module_of(graph_module, node)
        if isinstance(module, nn.MaxPool2d | nn.AdaptiveMaxPool2d):
            graph_module.add_submodule(node.target, _average_pool_for(module))
        elif node.op == "call_function" and node.target is F.max_pool2d:
            _replace_functional_max_pool(node)
        elif node.op == "call_function" and node.target is F.adaptive_max_pool2d:
            node.target = F.adaptive_avg_pool2d
            node.args, node.kwargs = (
                node.args[:2],
                {key: value for key, value in node.kwargs.items() if key == "output_size"},
            )


def _replace_functional_max_pool(node: fx.Node) -> None:
    values = P.max_pool_arguments(node)
    if not _undilated(values.pop("dilation", 1)):
        raise UnsupportedModel("dilated max pooling has no average-pooling equivalent")
    if values.pop("return_indices", False):
        raise UnsupportedModel("max pooling that returns indices cannot become average pooling")
    node.target = F.avg_pool2d
    node.args = (values.pop("input"),)
    node.kwargs = values


def _replace_relus(graph_module: fx.GraphModule,
                   make: Callable[[str, ClampedReLU], nn.Module]) -> None:
    """Every ClampedReLU (the canonical form of ReLU, ReLU6, clamp(0, ·)) becomes ``make``'s."""
    for name, module in list(graph_module.named_modules()):
        if isinstance(module, ClampedReLU):
            graph_module.add_submodule(name, make(name, module))


def _quantise_pools(graph_module: fx.GraphModule, make_cq: Callable[[], CQActivation]) -> None:
    for node in list(graph_module.graph.nodes):
        if not _is_avg_pool(graph_module, node):
            continue
        users = list(node.users)
        if users and all(is_cq(P.module_of(graph_module, user)) for user in users):
            continue
        if not _feeds_spiking_layer(graph_module, node):
            continue  # the readout stays linear
        P.insert_module_after(graph_module, node, make_cq(), "cq", users, numbered=True)


def to_cq(
    model: nn.Module | fx.GraphModule,
    clamp_max: float,
    levels: int,
    *,
    max_pool_to_avg: bool = True,
    surrogate_margin: float = 0.0,
) -> fx.GraphModule:
    """Return a new GraphModule with every ReLU replaced by CQActivation(m, L).

    ReLU modules and functions, ReLU6 and clamps/hardtanh with a lower bound of 0 all become
    ``CQActivation(clamp_max, levels)``; every average pooling that feeds a further spiking
    layer is followed by a CQActivation (unless one already follows), because the paper's
    pooling layers spike, so a pooled rate must again be one of the T + 1 spike counts; a pool
    in the readout (global pooling → classifier) stays linear.  With ``max_pool_to_avg``
    (default) max pooling becomes average pooling with the same kernel, stride and padding,
    as in the paper — max pooling has no exact rate-coded counterpart.  The output layer stays
    linear.  ``surrogate_margin`` widens the straight-through window (see CQActivation).
    ``model`` itself is deep-copied, never mutated.
    """
    graph_module = recognise_activations(model)
    if max_pool_to_avg:
        _replace_max_pools(graph_module)

    def make_cq() -> CQActivation:
        return CQActivation(clamp_max, levels, surrogate_margin)

    _replace_relus(graph_module, lambda _name, _relu: make_cq())
    _quantise_pools(graph_module, make_cq)
    return P.finish(graph_module)


def to_qcfs(model: nn.Module | fx.GraphModule, levels: int,
            clips: dict[str, float]) -> fx.GraphModule:
    """Return a new GraphModule with every ReLU replaced by QCFSActivation(L, λ).

    ``clips`` gives each activation's starting λ by its name in
    ``recognise_activations(model)`` (a ReLU6 or clamp keeps its own bound if lower).  Max
    pooling becomes average pooling, as in ``to_cq``; pools stay linear (an IF layer's spikes
    averaged are the next layer's input current), and so does the output layer.
    """
    graph_module = recognise_activations(model)
    _replace_max_pools(graph_module)

    def make_qcfs(name: str, relu: ClampedReLU) -> QCFSActivation:
        bound = clips[name] if relu.clamp_max is None else min(clips[name], relu.clamp_max)
        return QCFSActivation(levels, bound)

    _replace_relus(graph_module, make_qcfs)
    return P.finish(graph_module)
