"""Activation statistics from calibration data, streamed over batches with bounded memory.

Percentiles are taken over the positive activations (zeros say nothing about scale) with a
two-pass histogram: the first pass finds each layer's (or channel's) maximum, the second
bins the values on [0, max] in ``bins`` bins; the percentile is the upper edge of the bin
where the cumulative count reaches it (error ≤ max/bins).  Memory is O(layers·channels·bins)
whatever the number of samples, and the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import fx

Batches = Callable[[], Iterator[torch.Tensor]]


def _channels_first(values: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] → [C, B·...]."""
    return values.transpose(0, 1).reshape(values.shape[1], -1)


def visit_outputs(gm: fx.GraphModule, names: list[str], batches: Batches,
                  visit: Callable[[str, torch.Tensor], None]) -> None:
    """Run every calibration batch and call ``visit(name, output)`` for each named module."""
    handles = [gm.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: visit(name, out.detach())) for name in names]
    try:
        with torch.no_grad():
            for batch in batches():
                gm(batch)
    finally:
        for handle in handles:
            handle.remove()


def activation_maxima(gm: fx.GraphModule, names: list[str], batches: Batches, *,
                      per_channel: bool) -> dict[str, torch.Tensor]:
    """The largest activation of each layer (shape [1]) or of each channel (shape [C])."""
    maxima: dict[str, torch.Tensor] = {}

    def visit(name: str, out: torch.Tensor) -> None:
        value = _channels_first(out).amax(1) if per_channel else out.max().reshape(1)
        maxima[name] = value if name not in maxima else torch.maximum(maxima[name], value)

    visit_outputs(gm, names, batches, visit)
    return {name: value.cpu() for name, value in maxima.items()}


def activation_percentiles(gm: fx.GraphModule, names: list[str], batches: Batches, *,
                           percentile: float, per_channel: bool,
                           bins: int = 4096) -> dict[str, torch.Tensor]:
    """The ``percentile`` of each layer's (or channel's) positive activations."""
    maxima = activation_maxima(gm, names, batches, per_channel=per_channel)
    if percentile >= 100:
        return maxima
    histograms: dict[str, torch.Tensor] = {}

    def visit(name: str, out: torch.Tensor) -> None:
        rows = _channels_first(out) if per_channel else out.reshape(1, -1)
        top = maxima[name].to(rows.device).clamp_min(1e-12).view(-1, 1)
        index = torch.clamp((rows / top * bins).long(), 0, bins - 1)
        offset = torch.arange(rows.shape[0], device=rows.device).view(-1, 1) * bins
        counts = torch.bincount((index + offset)[rows > 0], minlength=rows.shape[0] * bins)
        counts = counts.view(rows.shape[0], bins).cpu()
        histograms[name] = counts if name not in histograms else histograms[name] + counts

    visit_outputs(gm, names, batches, visit)
    result = {}
    for name, counts in histograms.items():
        cumulative = counts.cumsum(1).double()
        total = cumulative[:, -1:].clamp_min(1)
        edge = (cumulative / total < percentile / 100.0).sum(1).clamp(max=bins - 1)
        value = (edge + 1).double() / bins * maxima[name].double()
        result[name] = torch.where(counts.sum(1) > 0, value, maxima[name].double()).float()
    return result
