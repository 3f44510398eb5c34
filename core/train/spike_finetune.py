"""Spike-aware fine-tuning: train a CQ network through the IF network it will become.

The forward pass is the plain IF network itself, all T steps (time folded into the batch),
so the loss sees the spike counts the deployed SNN produces, spike-order errors included.
The backward pass treats each IF layer as the clamp of its window-mean current
(straight-through inside the clamp window), the rate-based gradient of tandem learning
(Wu et al., "Tandem Learning for Deep Spiking Neural Networks", TNNLS 2021):

    forward:   o[t] = a · s[t]                        (s: the IF neuron's spikes, θ = m)
    backward:  ∂o[t]/∂c[t'] = (1/T) · 1[0 ≤ c̄ ≤ m]    (c̄ = (1/T)·Σ_t c[t])

Why: on narrow networks (residual ones above all) an IF neuron that fires early on a
current whose window mean is below θ cannot take the spike back, the surplus grows layer by
layer, and CTT's per-channel thresholds correct the mean rate but not the per-sample timing
(docs/methods.md).  Training on the spikes lets the weights absorb that timing error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn

from core.encoders import InputEncoder
from core.graph.spiking import to_spiking
from core.neurons import IFNeuron, per_channel, reset_state, set_steps


class SurrogateIF(nn.Module):
    """An IF layer for training: the IF neuron's spikes forward, the clamp's gradient back."""

    def __init__(self, neuron: IFNeuron, window: int):
        super().__init__()
        self.neuron = neuron
        self.window = window

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reset_state(self.neuron)
            set_steps(self.neuron, self.window)
            spikes = self.neuron(current.detach())
        mean = current.view(self.window, -1, *current.shape[1:]).mean(0)
        theta = per_channel(self.neuron.threshold, mean)
        inside = (mean >= 0) & (mean <= theta)
        rate = mean * inside * (per_channel(self.neuron.amplitude, mean) / theta)
        straight_through = (rate - rate.detach()).unsqueeze(0).expand(self.window, *rate.shape)
        return spikes + straight_through.reshape(spikes.shape)


class WindowReadout(nn.Module):
    """The IF network as a classifier: encode, run T steps, average the output current."""

    def __init__(self, network: fx.GraphModule, encoder: InputEncoder, window: int):
        super().__init__()
        self.network = network
        self.encoder = encoder
        self.window = window

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.encoder.begin(images)
        out = self.network(self.encoder.steps(0, self.window))
        return out.view(self.window, images.shape[0], -1).mean(0)


def spike_trainable(body: fx.GraphModule, encoder: InputEncoder, window: int,
                    neuron_for: Callable[[str], IFNeuron]) -> WindowReadout:
    """A copy of ``body``'s IF network as a trainable classifier (module names kept, so
    ``copy_parameters`` can bring the trained weights back into ``body`` or its parent)."""
    network = to_spiking(body, lambda name, _act: SurrogateIF(neuron_for(name), window))
    return WindowReadout(network, encoder, window)


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Set every parameter of ``target`` to the parameter of the same name in ``source``;
    those ``source`` lacks (a QCFS clip λ, which the IF network holds as its fixed θ) stay."""
    trained = dict(source.named_parameters())
    with torch.no_grad():
        for name, parameter in target.named_parameters():
            if name in trained:
                parameter.copy_(trained[name])
