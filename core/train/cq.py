"""The clamp-and-quantise (CQ) activation that makes an ANN convertible at low latency.

An SNN neuron can emit at most T spikes in a window of T steps, so its rate takes only the
T + 1 values {0, 1/L, ..., T/L}.  Training the ANN with exactly that activation removes the
clipping and quantisation errors of conversion (Yan, Zhou & Wong, AAAI 2021 / TNNLS).
"""

from __future__ import annotations

import torch
from torch import nn


def _is_exporting() -> bool:
    """True while torch.onnx or torch.export traces the model (no autograd Function wanted)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def cq_quantize(z: torch.Tensor, clamp_max: float, levels: int) -> torch.Tensor:
    """floor(clamp(z, 0, m) * L) / L with plain torch ops (exports as Clip, Mul, Floor, Div)."""
    return torch.floor(torch.clamp(z, 0.0, clamp_max) * levels) / levels


class _CQStraightThrough(torch.autograd.Function):
    """Exact CQ forward; straight-through backward inside [lo, hi], gradient clipped to [-1, 1]."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, clamp_max: float, levels: int, margin: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.window = (-margin / levels, clamp_max + margin / levels)
        return cq_quantize(z, clamp_max, levels)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (z,) = ctx.saved_tensors
        low, high = ctx.window
        inside = (z >= low) & (z <= high)
        grad = torch.where(inside, grad_output.clamp(-1.0, 1.0), torch.zeros_like(grad_output))
        return grad, None, None, None


class CQActivation(nn.Module):
    """Clamp-and-quantise activation with a straight-through gradient.

    Forward:  a = floor(clamp(z, 0, m) · L) / L,   m = T / L,
    so a ∈ {0, 1/L, …, T/L} — exactly the firing rates (times m) an IF neuron can reach in
    T steps.
    Backward: ∂a/∂z := 1 where −k/L ≤ z ≤ m + k/L, else 0; the incoming gradient is clipped
    to [−1, 1].  k = ``surrogate_margin`` (in levels) widens the paper's window [0, m] (k = 0).
    Why widen it: at T = 1 the only step sits at z = m, the top edge of [0, m], so with k = 0
    a unit learns only while it is silent; k = 1 puts the step inside the window
    (docs/t1-recipe-sweep.md measures the difference).  The forward pass, and so the
    conversion, does not depend on k.

    While exporting (ONNX / torch.export) or without autograd, the forward is the plain op
    chain Clip → Mul → Floor → Div, which is how a CQ model is recognised after upload.
    """

    def __init__(self, clamp_max: float, levels: int, surrogate_margin: float = 0.0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels}")
        if clamp_max <= 0:
            raise ValueError(f"clamp_max must be positive, got {clamp_max}")
        if surrogate_margin < 0:
            raise ValueError(f"surrogate_margin must be ≥ 0, got {surrogate_margin}")
        self.clamp_max = float(clamp_max)
        self.levels = int(levels)
        self.surrogate_margin = float(surrogate_margin)

    @property
    def window(self) -> int:
        """T = m · L, the number of time steps whose spike counts this activation reproduces."""
        return round(self.clamp_max * self.levels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not _is_exporting():
            return _CQStraightThrough.apply(z, self.clamp_max, self.levels, self.surrogate_margin)
        return cq_quantize(z, self.clamp_max, self.levels)

    def extra_repr(self) -> str:
        return (f"clamp_max={self.clamp_max}, levels={self.levels}, "
                f"surrogate_margin={self.surrogate_margin}")
