"""Canonical ANN modules that the graph passes rewrite recognised patterns into."""

from __future__ import annotations

import torch
from torch import nn


class ClampedReLU(nn.Module):
    """a = clamp(z, 0, m); plain ReLU when ``clamp_max`` is None.

    Every ReLU-like activation (ReLU, ReLU6, Clip(0, m), Hardtanh(0, m)) becomes one of these,
    so the converter has a single thing to replace with a spiking neuron.
    """

    def __init__(self, clamp_max: float | None = None):
        super().__init__()
        self.clamp_max = None if clamp_max is None else float(clamp_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp_max is None:
            return torch.relu(x)
        return torch.clamp(x, 0.0, self.clamp_max)

    def extra_repr(self) -> str:
        return f"clamp_max={self.clamp_max}"


class ChannelAffine(nn.Module):
    """y[:, c] = x[:, c]·scale[c] + shift[c]: a BatchNorm with no conv to fold into,
    or the input's (x - mean)/std normalisation."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("shift", shift.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    @classmethod
    def normalisation(cls, mean: list[float], std: list[float]) -> ChannelAffine:
        std_t = torch.tensor(std, dtype=torch.float32)
        return cls(1.0 / std_t, -torch.tensor(mean, dtype=torch.float32) / std_t)
