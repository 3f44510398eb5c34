"""Passes that bring any imported or traced model into the converter's canonical form.

Each pass takes a GraphModule and returns a new one; the caller's model is never mutated.
After ``canonicalize``: no Dropout/Identity, no output softmax, BatchNorm folded into the
preceding Conv/Linear (a lone BatchNorm becomes a ``ChannelAffine``), every ReLU-like
activation a ``ClampedReLU`` and every clamp→×L→floor→÷L chain a ``CQActivation``, functional
max pooling a ``nn.MaxPool2d`` module.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.errors import UnsupportedModel
from core.graph import patterns as P
from core.graph.modules import ChannelAffine, ClampedReLU


class LeafTracer(fx.Tracer):
    """Keeps our own activation, affine and input-coding modules as single call_module nodes."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        from core.train.cq import CQActivation
        from core.train.input_coding import ICEExpand, VREncode

        leaves = (ClampedReLU, ChannelAffine, CQActivation, VREncode, ICEExpand)
        return isinstance(module, leaves) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """A GraphModule for any model (a copy; modules already traced are copied too)."""
    duplicate = copy.deepcopy(model)
    if isinstance(duplicate, fx.GraphModule):
        return duplicate
    try:
        graph = LeafTracer().trace(duplicate)
    except Exception as error:  # fx raises many types for untraceable control flow
        raise UnsupportedModel(
            f"the model could not be traced symbolically ({error}); remove data-dependent "
            "control flow or export it to ONNX first") from error
    return fx.GraphModule(duplicate, graph, type(duplicate).__name__)


def _finish(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _unique_name(gm: fx.GraphModule, base: str) -> str:
    name, index = base.replace(".", "_"), 1
    while hasattr(gm, name):
        name, index = f"{base.replace('.', '_')}_{index}", index + 1
    return name


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module,
                         source: fx.Node, base: str) -> fx.Node:
    """Insert ``module(source)`` before ``node`` and route node's users to it."""
    name = _unique_name(gm, base)
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    return new


def remove_passthrough(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop Dropout and Identity: they are the identity at inference."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        module = P.module_of(gm, node)
        if isinstance(module, P.DROPOUT_MODULES) or P.is_function(node, P.DROPOUT_FUNCTIONS):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    return _finish(gm)


def strip_output_softmax(gm: fx.GraphModule) -> fx.GraphModule:
    """Remove a final (log-)softmax: argmax is unchanged and the SNN reads out logits."""
    gm = trace(gm)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    result = output.args[0]
    while isinstance(result, fx.Node) and (
        isinstance(P.module_of(gm, result), P.SOFTMAX_MODULES)
        or P.is_function(result, P.SOFTMAX_FUNCTIONS)
        or P.is_method(result, {"softmax", "log_softmax"})
    ):
        inner = result.args[0]
        output.args = (inner,)
        gm.graph.erase_node(result)
        result = inner
    return _finish(gm)


def _fold_into(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """W' = W·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε) + β, per output channel."""
    folded = copy.deepcopy(layer)
    scale, shift = _bn_affine(bn)
    weight = folded.weight.detach()
    folded.weight = nn.Parameter(weight * scale.view(-1, *([1] * (weight.dim() - 1))))
    bias = folded.bias.detach() if folded.bias is not None else torch.zeros_like(scale)
    folded.bias = nn.Parameter(bias * scale + shift)
    return folded


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel scale and shift an eval-mode BatchNorm applies."""
    std = torch.sqrt(bn.running_var.detach().float() + bn.eps)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean.detach().float() * scale


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every BatchNorm into the Conv/Linear before it; a lone BN becomes a ChannelAffine."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        bn = P.module_of(gm, node)
        if not isinstance(bn, P.BATCHNORM_MODULES):
            continue
        source = node.args[0]
        layer = P.module_of(gm, source) if isinstance(source, fx.Node) else None
        foldable = (isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear))
                    and len(source.users) == 1
                    and layer.weight.shape[0] == bn.running_mean.shape[0])
        if foldable:
            gm.add_submodule(str(source.target), _fold_into(layer, bn))
            node.replace_all_uses_with(source)
        else:
            _replace_with_module(gm, node, ChannelAffine(*_bn_affine(bn)), source,
                                 f"{node.target}_affine")
        gm.graph.erase_node(node)
    return _finish(gm)


def _clamp_bounds(gm: fx.GraphModule, node: fx.Node) -> tuple[float | None, float | None] | None:
    """(min, max) of a ReLU-like node, or None when the node is not one."""
    module = P.module_of(gm, node)
    if isinstance(module, nn.ReLU) or P.is_function(node, P.RELU_FUNCTIONS) \
            or P.is_method(node, {"relu"}):
        return 0.0, None
    if isinstance(module, nn.ReLU6) or P.is_function(node, P.RELU6_FUNCTIONS):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if P.is_function(node, {F.hardtanh}):
        return (P.scalar_constant(gm, P.node_arg(node, 1, "min_val", -1.0)),
                P.scalar_constant(gm, P.node_arg(node, 2, "max_val", 1.0)))
    if P.is_function(node, {torch.clamp_min}) or P.is_method(node, {"clamp_min"}):
        return P.scalar_constant(gm, P.node_arg(node, 1, "min")), None
    if P.is_function(node, P.CLAMP_FUNCTIONS) or P.is_method(node, {"clamp", "clip"}):
        low = P.node_arg(node, 1, "min")
        high = P.node_arg(node, 2, "max")
        low_value = P.scalar_constant(gm, low) if low is not None else None
        high_value = P.scalar_constant(gm, high) if high is not None else None
        if (low is not None and low_value is None) or (high is not None and high_value is None):
            return None
        return low_value, high_value
    return None


def recognise_activations(gm: fx.GraphModule) -> fx.GraphModule:
    """ReLU, ReLU6, Clip(0, m) and Hardtanh(0, m) become ClampedReLU(m)."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        bounds = _clamp_bounds(gm, node)
        if bounds is None or bounds[0] != 0.0:
            continue
        if bounds[1] is not None and bounds[1] <= 0:
            continue
        if node.op == "call_module":  # keep the user's layer name
            gm.add_submodule(str(node.target), ClampedReLU(bounds[1]))
            continue
        _replace_with_module(gm, node, ClampedReLU(bounds[1]), node.args[0], f"{node.name}_act")
        gm.graph.erase_node(node)
    return _finish(gm)


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _scale_factor(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> float | None:
    """For ``source·k`` (or ``k·source``) return k; for ``source/k`` return 1/k."""
    if P.is_function(node, P.MUL_TARGETS):
        other = node.args[1] if node.args[0] is source else node.args[0]
        return P.scalar_constant(gm, other)
    if P.is_function(node, P.DIV_TARGETS) and node.args[0] is source:
        divisor = P.scalar_constant(gm, node.args[1])
        return None if not divisor else 1.0 / divisor
    return None


@dataclass(frozen=True)
class QuantiseChain:
    """clamp(z, 0, m) → ×up → floor [→ ×down], as a graph spells floor-quantisation.

    ``end``/``down`` are None when the floor's result is not rescaled on its own (ICE divides
    the concatenation of its grids by L once).
    """

    clamp: fx.Node
    mul: fx.Node | None  # None for ×1, which exporters fold away
    floor: fx.Node
    up: float
    end: fx.Node | None = None
    down: float | None = None


def quantise_chain(gm: fx.GraphModule, clamp: fx.Node) -> QuantiseChain | None:
    """The single-user chain ×up → floor (→ ÷ or ×) that follows a ClampedReLU(m) node."""
    module = P.module_of(gm, clamp)
    if not isinstance(module, ClampedReLU) or module.clamp_max is None:
        return None
    def is_floor(node: fx.Node | None) -> bool:
        return node is not None and (P.is_function(node, P.FLOOR_FUNCTIONS)
                                     or P.is_method(node, {"floor"}))

    mul = _single_user(clamp)
    if is_floor(mul):
        mul, floor, up = None, mul, 1.0
    else:
        floor = _single_user(mul) if mul is not None else None
        up = _scale_factor(gm, mul, clamp) if is_floor(floor) else None
    if up is None or up <= 0:
        return None
    end = _single_user(floor)
    down = _scale_factor(gm, end, floor) if end is not None else None
    return QuantiseChain(clamp=clamp, mul=mul, floor=floor, up=up,
                         end=end if down is not None else None, down=down)


def recognise_cq(gm: fx.GraphModule) -> fx.GraphModule:
    """ClampedReLU(m) → ×L → floor → ÷L (the CQ activation as exported) becomes CQActivation."""
    from core.train.cq import CQActivation

    gm = trace(gm)
    for node in list(gm.graph.nodes):
        chain = quantise_chain(gm, node)
        if chain is None or chain.down is None or abs(chain.up * chain.down - 1.0) > 1e-6:
            continue
        levels = round(chain.up)
        if abs(levels - chain.up) > 1e-4:
            continue
        cq = CQActivation(clamp_max=P.module_of(gm, node).clamp_max, levels=levels)
        _replace_with_module(gm, chain.end, cq, node.args[0], f"{node.target}_cq")
        for dead in (chain.end, chain.floor, chain.mul, node):
            if dead is not None:
                gm.graph.erase_node(dead)
    return _finish(gm)


def modularise_max_pool(gm: fx.GraphModule) -> fx.GraphModule:
    """Functional max pooling becomes an nn.MaxPool2d module, which the converter replaces."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        if not P.is_function(node, {F.max_pool2d, torch.max_pool2d}):
            continue
        kernel = P.node_arg(node, 1, "kernel_size")
        stride = P.node_arg(node, 2, "stride") or kernel
        padding = P.node_arg(node, 3, "padding", 0)
        dilation = P.node_arg(node, 4, "dilation", 1)
        ceil_mode = P.node_arg(node, 5, "ceil_mode", False)
        pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
        _replace_with_module(gm, node, pool, node.args[0], "maxpool")
        gm.graph.erase_node(node)
    return _finish(gm)


def recognise_input_coding(gm: fx.GraphModule) -> fx.GraphModule:
    """An ICE coding block at the input becomes one ICEExpand module (core/graph/ice.py)."""
    from core.graph.ice import recognise_ice

    return recognise_ice(gm)


PASSES = (remove_passthrough, strip_output_softmax, fold_batchnorm, recognise_activations,
          recognise_cq, recognise_input_coding, modularise_max_pool)


# What fine-tuning starts from: the same vocabulary, but BatchNorm and dropout kept for training.
TRAINING_PASSES = (strip_output_softmax, recognise_activations, recognise_cq,
                   recognise_input_coding)


def canonicalize(model: nn.Module, passes: tuple = PASSES) -> fx.GraphModule:
    """Run the canonicalisation ``passes`` in order; the result is in eval mode."""
    gm = trace(model).eval()
    for graph_pass in passes:
        gm = graph_pass(gm)
    return gm.eval()
