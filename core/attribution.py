"""Error attribution: which IF layer costs the SNN its accuracy at t.

For the IF layers n_1 … n_L in graph order, hybrid k replaces n_1 … n_k by ideal rate
neurons, which send at every step what an IF neuron's rate tends to,

    o[t] = a · clamp(I[t] / θ, 0, 1),

and keeps the spiking layers after them.  With A_k(t) the top-1 of hybrid k after t steps
(A_0 the SNN itself), layer k's share of the loss is

    recovered_k(t) = A_k(t) − A_{k−1}(t),

so the shares add up to A_L(t) − A_0(t): what making every layer ideal recovers.  What is
left beyond A_L is the clamp at θ (the ANN's activations above it) and the readout.  It costs
L more simulations of the evaluation set; ASG networks are exact per layer and are skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from core.neurons import IFNeuron, per_channel
from core.report import LayerAttribution, MethodResult
from core.snn import SpikingNetwork


class IdealRate(nn.Module):
    """o = a · clamp(I/θ, 0, 1) at every step: an IF neuron's rate limit, without spikes."""

    def __init__(self, neuron: IFNeuron):
        super().__init__()
        self.register_buffer("threshold", neuron.threshold.clone())
        self.register_buffer("amplitude", neuron.amplitude.clone())

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        theta, amplitude = (per_channel(v, current) for v in (self.threshold, self.amplitude))
        return torch.clamp(current / theta, 0.0, 1.0) * amplitude


def if_layers_in_order(snn: SpikingNetwork) -> list[str]:
    """The IF neurons' names in graph (execution) order."""
    return [str(node.target) for node in snn.network.graph.nodes if node.op == "call_module"
            and isinstance(snn.network.get_submodule(str(node.target)), IFNeuron)]


def hybrid(snn: SpikingNetwork, ideal: list[str]) -> SpikingNetwork:
    """A copy of ``snn`` whose neurons ``ideal`` are ideal rate neurons."""
    network = copy.deepcopy(snn.network)
    for name in ideal:
        network.add_submodule(name, IdealRate(network.get_submodule(name)))
    return SpikingNetwork(method=snn.method, network=network, reference=snn.reference,
                          encoder=snn.encoder, timesteps=snn.timesteps, latency=snn.latency,
                          mode=snn.mode, parameters=snn.parameters)


def attribute_errors(snn: SpikingNetwork, result: MethodResult,
                     simulate: Callable[[SpikingNetwork], MethodResult]
                     ) -> list[LayerAttribution]:
    """Each IF layer's share of the loss; ``result`` is the SNN's own simulation and
    ``simulate`` runs a hybrid on the same samples."""
    if snn.mode != "if":
        return []
    layers = if_layers_in_order(snn)
    attributions, previous = [], result.top1
    for k, name in enumerate(layers, start=1):
        top1 = simulate(hybrid(snn, layers[:k])).top1
        attributions.append(LayerAttribution(
            layer=name, top1=top1, recovered=[a - b for a, b in zip(top1, previous, strict=True)]))
        previous = top1
    return attributions
