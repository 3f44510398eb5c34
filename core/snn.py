"""A converted spiking network with everything needed to simulate and describe it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import fx

from core.encoders import InputEncoder
from core.report import Latency


@dataclass
class SpikingNetwork:
    """The output of a conversion method.

    ``network`` holds stateless layers and neuron modules (named like the ANN activations
    they replace); ``reference`` is the ANN whose outputs the SNN should reproduce (the
    uploaded ANN, or the CQ-trained ANN for the paper's methods); ``mode`` is ``"if"`` for
    step-by-step simulation with an anytime readout or ``"asg"`` for layer-after-layer
    accumulate-then-spike.
    """

    method: str
    network: fx.GraphModule
    reference: fx.GraphModule
    encoder: InputEncoder
    timesteps: int
    latency: Latency
    mode: Literal["if", "asg"] = "if"
    parameters: dict = field(default_factory=dict)
