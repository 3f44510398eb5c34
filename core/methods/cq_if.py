"""cq-if: the CQ-trained ANN with plain IF neurons, θ = m, spikes of amplitude m.

Anytime and T steps end to end, but the IF neuron's count depends on the order in which
input spikes arrive, so it can differ from the CQ activation by a spike or more per layer.
"""

from core.graph.spiking import to_spiking
from core.methods.balancing import anytime_latency
from core.methods.context import ConversionContext
from core.methods.cq import build_cq_network, cq_parameters
from core.methods.cq_asg import cq_encoder
from core.neurons import IFNeuron
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    cq = build_cq_network(ctx)
    network = to_spiking(cq.body, lambda _name, _act: IFNeuron(cq.clamp_max, reset="subtract"))
    return SpikingNetwork(method="cq-if", network=network, reference=cq.model,
                          encoder=cq_encoder(cq), timesteps=cq.window,
                          latency=anytime_latency(cq.window),
                          parameters=cq_parameters(cq, ctx))
