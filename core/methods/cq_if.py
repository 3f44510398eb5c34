"""cq-if: the CQ-trained ANN with plain IF neurons, θ = m, spikes of amplitude m.

Anytime and T steps end to end, but the IF neuron's count depends on the order in which
input spikes arrive, so it can differ from the CQ activation by a spike or more per layer.
"""

from core.graph.spiking import to_spiking
from core.methods.balancing import anytime_latency
from core.methods.context import ConversionContext
from core.methods.cq import build_cq_network, cq_encoder, if_neuron, if_parameters, spike_finetuned
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    cq = build_cq_network(ctx)
    body, tuning = spike_finetuned(ctx, cq, "cq-if")
    network = to_spiking(body, lambda _name, _act: if_neuron(cq, ctx))
    return SpikingNetwork(method="cq-if", network=network, reference=cq.model,
                          encoder=cq_encoder(cq), timesteps=cq.window,
                          latency=anytime_latency(cq.window),
                          parameters=if_parameters(cq, ctx, tuning))
