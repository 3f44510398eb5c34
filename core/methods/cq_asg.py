"""cq-asg: the CQ-trained ANN with accumulate-then-spike neurons (exact).

Every spiking layer integrates its whole window of T steps, then fires n = floor(clamp(c̄,
0, m)·L) spikes, which is exactly the CQ activation: the SNN reproduces the CQ ANN.  The
price is latency: a layer can start only when the one before has finished, so the last
readout comes after depth·T steps.
"""

from core.graph.spiking import to_spiking
from core.methods.context import ConversionContext
from core.methods.cq import build_cq_network, cq_encoder, cq_parameters, spiking_depth
from core.neurons import ASGNeuron
from core.report import Latency
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    cq = build_cq_network(ctx)
    depth = spiking_depth(cq.body)
    network = to_spiking(cq.body, lambda _name, _act: ASGNeuron(cq.clamp_max, cq.levels))
    latency = Latency(
        window=cq.window, end_to_end_steps=depth * cq.window, anytime=False,
        note=(f"accumulate-then-spike: each of the {depth} spiking layers waits for its whole "
              f"{cq.window}-step window; accuracy at t is read during the last window, "
              f"{(depth - 1) * cq.window} steps after the input started"))
    return SpikingNetwork(method="cq-asg", network=network, reference=cq.model,
                          encoder=cq_encoder(cq), timesteps=cq.window, latency=latency,
                          mode="asg", parameters=cq_parameters(cq, ctx))
