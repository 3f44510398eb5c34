"""Fusion pass for simulation: an IF neuron absorbs the scalar factors and the average
pooling that follow it.

A copy of the network is rewritten; its other modules are shared with the original, which
is left as it was (the exported network and the one training sees keep their layers).
"""

from __future__ import annotations

import operator
from collections import Counter
from numbers import Real

import torch
from torch import fx, nn

from core.neurons import FusedIFNeuron, IFNeuron

_MULTIPLY = (operator.mul, torch.mul)


def fuse_if_outputs(network: fx.GraphModule) -> fx.GraphModule:
    """``network`` with every IF neuron → scalar factors → pooling chain made one module.

    The chain follows single consumers only: multiplications by a number, then optionally
    one average pooling that is square, has stride equal to its kernel, no padding, no ceil
    mode and no divisor override.  A neuron module called more than once is left alone.
    """
    graph = fx.Graph()
    graph.output(graph.graph_copy(network.graph, {}))
    modules = {str(node.target): operator.attrgetter(str(node.target))(network)
               for node in graph.nodes if node.op in ("call_module", "get_attr")}
    calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
    for node in [n for n in graph.nodes if n.op == "call_module"
                 and type(modules[str(n.target)]) is IFNeuron and calls[str(n.target)] == 1]:
        chain, factors = _factors_after(node)
        pool = _fusable_pool(modules, chain[-1])
        if pool is not None:
            chain.append(next(iter(chain[-1].users)))
        if len(chain) == 1:
            continue
        neuron = modules[str(node.target)]
        amplitude = neuron.amplitude
        for factor in factors:  # in graph order, so each product rounds as the graph's does
            amplitude = amplitude * factor
        modules[str(node.target)] = FusedIFNeuron(neuron, amplitude, pool)
        chain[-1].replace_all_uses_with(node)
        for fused in reversed(chain[1:]):
            graph.erase_node(fused)
    used = {str(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")}
    return fx.GraphModule({k: v for k, v in modules.items() if k in used}, graph).eval()


def _factors_after(node: fx.Node) -> tuple[list[fx.Node], list[float]]:
    """``node`` and the multiplications by a number that follow it, one consumer each."""
    chain, factors = [node], []
    while len(chain[-1].users) == 1:
        (user,) = chain[-1].users
        factor = _scalar_factor(user, chain[-1])
        if factor is None:
            break
        chain.append(user)
        factors.append(factor)
    return chain, factors


def _scalar_factor(node: fx.Node, operand: fx.Node) -> float | None:
    if node.op != "call_function" or node.target not in _MULTIPLY or node.kwargs \
            or len(node.args) != 2:
        return None
    other = node.args[1] if node.args[0] is operand else node.args[0]
    if other is operand or not isinstance(other, Real) or isinstance(other, bool):
        return None
    return float(other)


def _fusable_pool(modules: dict, node: fx.Node) -> int | None:
    """The kernel of the pooling that is ``node``'s only consumer, if it can be fused."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    pool = modules.get(str(user.target)) if user.op == "call_module" else None
    if not isinstance(pool, nn.AvgPool2d) or pool.ceil_mode or pool.divisor_override:
        return None
    kernel, stride, padding = (_pair(v) for v in (pool.kernel_size, pool.stride or
                                                  pool.kernel_size, pool.padding))
    if kernel[0] != kernel[1] or stride != kernel or padding != (0, 0):
        return None
    return kernel[0]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)
