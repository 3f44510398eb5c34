"""Passes that bring any imported or traced model into the converter's canonical form.

Each pass takes a GraphModule and returns a new one; the caller's model is never mutated.
After ``canonicalize``: no Dropout/Identity, no output softmax, BatchNorm folded into the
preceding Conv/Linear (a lone BatchNorm becomes a ``ChannelAffine``), every ReLU-like
activation a ``ClampedReLU`` and every clamp→×L→floor→÷L chain a ``CQActivation``, functional
max pooling a ``nn.MaxPool2d`` module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from core.graph import patterns as P
from core.graph.ice import recognise_ice
from core.graph.modules import ChannelAffine, ClampedReLU, CQActivation
from core.graph.patterns import trace


def remove_passthrough(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop Dropout and Identity: they are the identity at inference."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        module = P.module_of(gm, node)
        if isinstance(module, P.DROPOUT_MODULES) or P.is_function(node, P.DROPOUT_FUNCTIONS):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    return P.finish(gm)


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
    return P.finish(gm)


def _fold_into(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """W' = W·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε) + β, per output channel (torch's fusion)."""
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer, bn)
    return fuse_conv_bn_eval(layer, bn)


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
                    and layer.weight.shape[0] == bn.running_mean.shape[0]
                    and (bn.affine or not isinstance(layer, nn.Linear)))  # torch needs γ, β
        if foldable:
            gm.add_submodule(str(source.target), _fold_into(layer, bn))
            node.replace_all_uses_with(source)
        else:
            P.replace_with_module(gm, node, ChannelAffine(*_bn_affine(bn)), source,
                                  f"{node.target}_affine")
        gm.graph.erase_node(node)
    return P.finish(gm)


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
        P.replace_with_module(gm, node, ClampedReLU(bounds[1]), node.args[0], f"{node.name}_act")
        gm.graph.erase_node(node)
    return P.finish(gm)


def recognise_cq(gm: fx.GraphModule) -> fx.GraphModule:
    """ClampedReLU(m) → ×L → floor → ÷L (the CQ activation as exported) becomes CQActivation."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        chain = P.quantise_chain(gm, node)
        if chain is None or chain.down is None or abs(chain.up * chain.down - 1.0) > 1e-6:
            continue
        levels = round(chain.up)
        if abs(levels - chain.up) > 1e-4:
            continue
        cq = CQActivation(clamp_max=P.module_of(gm, node).clamp_max, levels=levels)
        P.replace_with_module(gm, chain.end, cq, node.args[0], f"{node.target}_cq")
        for dead in (chain.end, chain.floor, chain.mul, node):
            if dead is not None:
                gm.graph.erase_node(dead)
    return P.finish(gm)


def modularise_max_pool(gm: fx.GraphModule) -> fx.GraphModule:
    """Functional max pooling becomes an nn.MaxPool2d module, which the converter replaces."""
    gm = trace(gm)
    for node in list(gm.graph.nodes):
        if not P.is_function(node, {F.max_pool2d, torch.max_pool2d}):
            continue
        given = P.max_pool_arguments(node)
        kernel = given.get("kernel_size")
        pool = nn.MaxPool2d(kernel, given.get("stride") or kernel, given.get("padding", 0),
                            given.get("dilation", 1), ceil_mode=given.get("ceil_mode", False))
        P.replace_with_module(gm, node, pool, node.args[0], "maxpool")
        gm.graph.erase_node(node)
    return P.finish(gm)


def recognise_input_coding(gm: fx.GraphModule) -> fx.GraphModule:
    """An ICE coding block at the input becomes one ICEExpand module (core/graph/ice.py)."""
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
