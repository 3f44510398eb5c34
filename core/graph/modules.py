"""Canonical ANN modules that the graph passes rewrite recognised patterns into.

``ClampedReLU`` and ``ChannelAffine`` for plain networks; ``CQActivation`` (Yan, Zhou & Wong,
AAAI 2021 / TNNLS) and the input codings ``VREncode`` / ``ICEExpand`` for CQ-trained ones;
``QCFSActivation`` (Bu et al., ICLR 2022) for the qcfs method.
An SNN neuron can emit at most T spikes in a window of T steps, so its rate takes only the
T + 1 values {0, 1/L, ..., T/L}; training the ANN with exactly that activation removes the
clipping and quantisation errors of conversion.  The input codings map pixels p ∈ [0, 1] to
values on the 1/L grid capped at m = T/L, i.e. to spike counts n ∈ {0, …, T} divided by L:
the SNN input layer receives those counts (``spike_counts``) spread evenly over the window,
the ANN receives ``counts / L``.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import InvalidSpec


def cq_window(clamp_max: float, levels: int) -> int:
    """T = round(m · L): the time steps whose spike counts a CQ network with (m, L) reproduces."""
    return round(clamp_max * levels)


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
        return cq_window(self.clamp_max, self.levels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not _is_exporting():
            return _CQStraightThrough.apply(z, self.clamp_max, self.levels, self.surrogate_margin)
        return cq_quantize(z, self.clamp_max, self.levels)

    def extra_repr(self) -> str:
        return (f"clamp_max={self.clamp_max}, levels={self.levels}, "
                f"surrogate_margin={self.surrogate_margin}")


def qcfs_quantize(z: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """λ · floor(clamp(z / λ, 0, 1) · L + ½) / L with plain torch ops."""
    return torch.floor(torch.clamp(z / threshold, 0.0, 1.0) * levels + 0.5) / levels * threshold


class QCFSActivation(nn.Module):
    """Quantisation–clip–floor–shift activation (Bu et al., ICLR 2022) with a trainable clip λ.

    Forward:  a = (λ / L) · floor(clamp(z / λ, 0, 1) · L + ½),
    L levels between 0 and λ, each step half a level earlier than plain floor quantisation.
    An IF neuron with θ = λ, spikes of amplitude λ, reset by subtraction and u(0) = θ/2 fires
    floor(clamp(z / λ, 0, 1) · T + ½) spikes in T steps under a constant input z: at T = L
    exactly this activation, and at any other T with zero expected error (the paper's
    Theorem 2); the ½ shift is what the start u(0) = θ/2 adds to the count.
    Backward: straight-through floor, so ∂a/∂z = 1 on 0 < z < λ; λ (one per layer) learns
    from both the clip and the scale, as in the paper.
    """

    def __init__(self, levels: int, threshold: float):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels}")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def clip(self) -> torch.Tensor:
        """λ, kept away from 0 so that z / λ stays finite while it trains."""
        return self.threshold.clamp_min(1e-4)

    def clip_value(self) -> float:
        return float(self.clip().detach())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or _is_exporting():
            return qcfs_quantize(z, self.clip(), self.levels)
        scaled = torch.clamp(z / self.clip(), 0.0, 1.0) * self.levels + 0.5
        level = scaled + (torch.floor(scaled) - scaled).detach()  # straight-through floor
        return level / self.levels * self.clip()

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold):.4g}"


def _whole_window(levels: int, clamp_max: float) -> int:
    """T = m · L, which must be a whole number of time steps."""
    if levels < 1 or clamp_max <= 0:
        raise InvalidSpec(f"need levels ≥ 1 and clamp_max > 0, got L={levels}, m={clamp_max}")
    window = cq_window(clamp_max, levels)
    if window < 1 or abs(window - clamp_max * levels) > 1e-6:
        raise InvalidSpec(
            f"clamp_max · levels = {clamp_max * levels:g} must be a positive whole number of "
            "time steps T; choose m = T / L"
        )
    return window


def _levels_on_grid(pixels: torch.Tensor, grid: int, window: int) -> torch.Tensor:
    """min(floor(p · grid), T), clamped at 0, as floats: the spike count of p on a grid.

    Written as floor(clamp(p, 0, T/grid) · grid) so that, on the grid L, it is the CQ
    activation itself and exports to ONNX as Clip → Mul → Floor (no integer casts).
    """
    return torch.floor(torch.clamp(pixels, 0.0, window / grid) * grid)


class VREncode(nn.Module):
    """Value-range reduction: x0 = clamp(floor(p · L) / L, 0, m), p ∈ [0, 1].

    Range is traded for resolution so the input fits T = m·L steps; the count is n = L · x0.
    """

    expansion = 1

    def __init__(self, levels: int, clamp_max: float):
        super().__init__()
        self.window = _whole_window(levels, clamp_max)
        self.levels = int(levels)
        self.clamp_max = float(clamp_max)

    def spike_counts(self, pixels: torch.Tensor) -> torch.Tensor:
        """Integer spike count n = clamp(floor(p · L), 0, T) per input element (int64)."""
        return _levels_on_grid(pixels, self.levels, self.window).to(torch.int64)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _levels_on_grid(pixels, self.levels, self.window) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}, clamp_max={self.clamp_max}"


class ICEExpand(nn.Module):
    """Input channel expansion: quantise every channel on several grids around L.

    For grids g = L−k, …, L+k (k = grids // 2, grids ≤ 0 skipped) each channel becomes
    x_g = min(floor(p · g) / L, m) — all on the common 1/L scale — and the results are
    concatenated along channels grid by grid, the whole block repeated ``copies`` times:
    C → C · (number of grids) · copies channels, channel j carrying input channel j mod C.
    The count of element j is n_j = min(floor(p · g), T).
    """

    def __init__(self, levels: int, clamp_max: float, grids: int = 3, copies: int = 1):
        super().__init__()
        if grids < 1 or grids % 2 == 0:
            raise InvalidSpec(f"grids must be a positive odd number (L−k … L+k), got {grids}")
        if copies < 1:
            raise InvalidSpec(f"copies must be at least 1, got {copies}")
        self.window = _whole_window(levels, clamp_max)
        self.levels = int(levels)
        self.clamp_max = float(clamp_max)
        self.copies = int(copies)
        half = grids // 2
        self.grid_levels = [g for g in range(levels - half, levels + half + 1) if g > 0]

    @property
    def expansion(self) -> int:
        """Output channels per input channel."""
        return len(self.grid_levels) * self.copies

    def spike_counts(self, pixels: torch.Tensor) -> torch.Tensor:
        """Integer spike counts of the expanded input, shape (N, C · expansion, …), int64."""
        return self._levels(pixels).to(torch.int64)

    def _levels(self, pixels: torch.Tensor) -> torch.Tensor:
        block = [_levels_on_grid(pixels, g, self.window) for g in self.grid_levels]
        return torch.cat(block * self.copies, dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._levels(pixels) / self.levels

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, clamp_max={self.clamp_max}, "
            f"grid_levels={self.grid_levels}, copies={self.copies}"
        )


INPUT_CODINGS = (VREncode, ICEExpand)
