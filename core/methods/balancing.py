"""Threshold balancing: the shared core of the data-normalisation methods.

Scaling layer l's weights by λ_{l−1}/λ_l and its bias by 1/λ_l with θ = 1 (Diehl 2015) is
the same network as keeping the weights and giving layer l threshold θ_l = λ_l with spikes
of amplitude λ_l.  We use the second form: it needs no bookkeeping through residual adds,
concatenations or pooling, and the per-layer or per-channel λ is visible in the report.
"""

from __future__ import annotations

import torch

from core.encoders import make_encoder
from core.graph.analysis import activation_names
from core.graph.spiking import to_spiking
from core.methods.context import ConversionContext
from core.neurons import IFNeuron
from core.report import Latency
from core.snn import SpikingNetwork


def positive_thresholds(values: torch.Tensor) -> torch.Tensor:
    """Channels that never fired in calibration get the layer's largest threshold (θ > 0)."""
    fallback = values.max() if values.max() > 0 else torch.tensor(1.0)
    return torch.where(values > 0, values, fallback).float()


def anytime_latency(steps: int) -> Latency:
    return Latency(window=steps, end_to_end_steps=steps, anytime=True,
                   note="IF neurons fire as input arrives: every t ≤ T is a valid readout")


def threshold_balanced(ctx: ConversionContext, method: str, lambdas: dict[str, torch.Tensor],
                       *, initial_fraction: float = 0.0, parameters: dict | None = None
                       ) -> SpikingNetwork:
    """IF neurons with θ = λ (per layer or per channel) replacing every activation."""
    thresholds = {name: positive_thresholds(value) for name, value in lambdas.items()}

    def neuron(name: str, activation) -> IFNeuron:
        theta = thresholds[name]
        if getattr(activation, "clamp_max", None) is not None:
            theta = torch.clamp(theta, max=activation.clamp_max)
        return IFNeuron(theta, reset=ctx.spec.reset, initial_fraction=initial_fraction)

    steps = ctx.spec.timesteps
    return SpikingNetwork(
        method=method, network=to_spiking(ctx.ann, neuron), reference=ctx.ann,
        encoder=make_encoder(ctx.spec.input_encoding, ctx.spec.seed), timesteps=steps,
        latency=anytime_latency(steps),
        parameters={"reset": ctx.spec.reset, "input_encoding": ctx.spec.input_encoding,
                    "initial_membrane": f"{initial_fraction:g}·θ", **(parameters or {})},
    )


def layer_names(ctx: ConversionContext) -> list[str]:
    return activation_names(ctx.ann)
