"""Channels-last copies of a network's convolutions, for simulation on a CPU.

PyTorch's CPU convolutions are faster on channels-last (NHWC) tensors than on the default NCHW
layout at the simulator's chunk sizes (``benchmarks/bench_speed.py`` measures whole simulations
with it switched off: the "NCHW" rows), and the other layers keep the layout they are given,
so converting the weights and the input once keeps the whole simulation in NHWC.  The values
do not change beyond the convolution's own summation order.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn


def channels_last(network: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``network`` whose 2-D convolutions hold channels-last weights.

    Only the convolutions are copied; every other module is shared with ``network``, which
    is left as it was.
    """
    modules = {}
    for node in network.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        value = operator.attrgetter(str(node.target))(network)
        if isinstance(value, nn.Conv2d):
            value = copy.deepcopy(value).to(memory_format=torch.channels_last)
        modules[str(node.target)] = value
    return fx.GraphModule(modules, copy.deepcopy(network.graph)).eval()


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout if it is 4-D (batch, channels, height, width)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def memory_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """The dimension order in which ``x`` is laid out densely (None if it is not dense)."""
    order = tuple(sorted(range(x.dim()), key=lambda d: -x.stride(d)))
    return order if x.permute(order).is_contiguous() else None


def flat_in_memory_order(x: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """A ``[..., N]`` view of ``x``'s trailing dims in memory ``order`` (no copy)."""
    lead = x.dim() - len(order)
    permuted = x.permute(*range(lead), *(lead + d for d in order))
    return permuted.reshape(*x.shape[:lead], -1)
