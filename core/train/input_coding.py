"""Input coding for low latency: VR encoding and ICE (input channel expansion).

Both encoders map pixels p ∈ [0, 1] to values on the 1/L grid capped at m = T/L, i.e. to
spike counts n ∈ {0, …, T} divided by L.  The SNN input layer receives those counts
(``spike_counts``) spread evenly over the window; the ANN receives ``counts / L``.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from core.errors import InvalidSpec, UnsupportedModel


def _window(levels: int, clamp_max: float) -> int:
    """T = m · L, which must be a whole number of time steps."""
    if levels < 1 or clamp_max <= 0:
        raise InvalidSpec(f"need levels ≥ 1 and clamp_max > 0, got L={levels}, m={clamp_max}")
    window = round(clamp_max * levels)
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
        self.window = _window(levels, clamp_max)
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
        self.window = _window(levels, clamp_max)
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


_PASS_THROUGH_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_PASS_THROUGH_FUNCTIONS = {torch.flatten}
_PASS_THROUGH_METHODS = {"flatten", "view", "reshape"}


def _first_weighted_layer(graph_module: fx.GraphModule, start: fx.Node) -> fx.Node:
    """Follow the single path from the input through shape-only ops to the first conv/linear."""
    modules = dict(graph_module.named_modules())
    node = start
    while True:
        if len(node.users) != 1:
            raise UnsupportedModel(
                "input channel expansion needs the input to feed exactly one conv/linear layer; "
                f"'{node.name}' has {len(node.users)} users — use VR encoding instead"
            )
        node = next(iter(node.users))
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d | nn.Linear):
            return node
        passes = (
            isinstance(module, _PASS_THROUGH_MODULES)
            or (node.op == "call_function" and node.target in _PASS_THROUGH_FUNCTIONS)
            or (node.op == "call_method" and node.target in _PASS_THROUGH_METHODS)
        )
        if not passes:
            raise UnsupportedModel(
                f"input channel expansion cannot widen the first layer: '{node.name}' comes "
                "between the input and the first Conv2d/Linear module"
            )


def _widened(layer: nn.Conv2d | nn.Linear, expansion: int) -> nn.Module:
    """``layer`` with its input dimension repeated ``expansion`` times, weights shared equally.

    The expanded channels are whole copies of the C input channels stacked along dim 1, so
    both a conv's channel axis and a channel-major flatten see the original weight tiled
    ``expansion`` times; dividing by ``expansion`` makes the sum the original response to the
    average of the copies.
    """
    widened = copy.deepcopy(layer)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise UnsupportedModel("input channel expansion needs an ungrouped first convolution")
        widened.in_channels = layer.in_channels * expansion
        tiling = (1, expansion, 1, 1)
    else:
        widened.in_features = layer.in_features * expansion
        tiling = (1, expansion)
    widened.weight = nn.Parameter(layer.weight.detach().repeat(*tiling) / expansion)
    return widened


def with_input_coding(model: fx.GraphModule, encoder: nn.Module,
                      widen: bool = True) -> fx.GraphModule:
    """A new GraphModule that applies ``encoder`` to its input first.

    When the encoder widens the input (``encoder.expansion`` > 1, ICE), the first Conv2d or
    Linear is widened to match; at initialisation it computes approximately the original
    function (exactly the original on the mean of the expanded channels).  ``model`` is not
    modified.  ``widen=False`` is for a first layer trained on the expanded input already
    (an uploaded ICE network whose coding was split off).
    """
    graph_module = copy.deepcopy(model)
    graph = graph_module.graph
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModel(f"expected one model input, found {len(placeholders)}")
    source = placeholders[0]
    expansion = int(getattr(encoder, "expansion", 1))
    if expansion > 1 and widen:
        first = _first_weighted_layer(graph_module, source)
        layer = graph_module.get_submodule(first.target)
        graph_module.add_submodule(first.target, _widened(layer, expansion))
    name = "input_encoder"
    while name in dict(graph_module.named_modules()):
        name = f"_{name}"
    graph_module.add_submodule(name, copy.deepcopy(encoder))
    users = list(source.users)
    with graph.inserting_after(source):
        encoded = graph.call_module(name, (source,))
    for user in users:
        user.replace_input_with(source, encoded)
    graph.lint()
    graph_module.recompile()
    return graph_module
