"""Recognise what an uploaded, already CQ-trained graph was trained with.

A CQ model exported by snnconv (or by the authors' code) carries its input coding as ordinary
ops at the input.  Canonicalisation has already given each its module: VR is the CQ chain
itself applied to the pixels, floor(clamp(p, 0, m)·L)/L, so it arrives as a ``CQActivation``
fed by the input; ICE arrives as an ``ICEExpand`` (core/graph/ice.py).
Feeding such a model anything but raw pixels in [0, 1], or coding its input a second time in
a different way, breaks the exactness of the conversion, so the coding is detected, removed
from the graph and returned as the module the SNN's input encoder is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from core.errors import InvalidSpec
from core.graph import patterns as P
from core.graph.analysis import is_activation, is_cq
from core.graph.modules import CQActivation, ICEExpand, VREncode, cq_window
from core.graph.spiking import strip_leading_module


@dataclass(frozen=True)
class CQDetection:
    """What the uploaded graph says about itself; ``levels`` is None when it is not CQ."""

    levels: int | None = None
    clamp_max: float | None = None
    coding: str = "direct"          # "direct", "vr" or "vr-ice"
    ice_grids: int | None = None
    ice_copies: int | None = None

    @property
    def is_cq(self) -> bool:
        return self.levels is not None

    @property
    def window(self) -> int | None:
        return None if self.levels is None else cq_window(self.clamp_max, self.levels)

    def describe(self) -> dict:
        if not self.is_cq:
            return {"cq": False}
        described = {"cq": True, "L": self.levels, "m": self.clamp_max, "T": self.window,
                     "coding": self.coding}
        if self.coding == "vr-ice":
            described |= {"ice_grids": self.ice_grids, "ice_copies": self.ice_copies}
        return described


def cq_levels(gm: fx.GraphModule) -> tuple[float, int] | None:
    """(m, L) of a graph whose activations are all CQ with one (m, L), else None."""
    activations = [P.module_of(gm, n) for n in gm.graph.nodes
                   if is_activation(P.module_of(gm, n))]
    if not activations or not all(is_cq(a) for a in activations):
        return None
    settings = {(a.clamp_max, a.levels) for a in activations}
    if len(settings) != 1:
        raise InvalidSpec(f"the CQ activations of this model disagree on (m, L): "
                          f"{sorted(settings)}; snnconv converts one (m, L) per network")
    return settings.pop()


def _first_module(gm: fx.GraphModule) -> nn.Module | None:
    """The module applied to the input, when the input has no other use."""
    user = P.single_user(P.graph_input(gm))
    return P.module_of(gm, user) if user is not None else None


def detect(gm: fx.GraphModule) -> CQDetection:
    """Whether ``gm`` (canonical form) is CQ-trained, its (m, L), and the coding at its input."""
    levels_found = cq_levels(gm)
    if levels_found is None:
        return CQDetection()
    m, levels = levels_found
    first = _first_module(gm)
    if isinstance(first, ICEExpand) and (first.clamp_max, first.levels) == (m, levels):
        return CQDetection(levels=levels, clamp_max=m, coding="vr-ice",
                           ice_grids=2 * (max(first.grid_levels) - first.levels) + 1,
                           ice_copies=first.copies)
    if is_cq(first) and (first.clamp_max, first.levels) == (m, levels):
        return CQDetection(levels=levels, clamp_max=m, coding="vr")
    return CQDetection(levels=levels, clamp_max=m)


def split_input_coding(gm: fx.GraphModule,
                       found: CQDetection) -> tuple[fx.GraphModule, nn.Module | None]:
    """(``gm`` without its detected input coding, the coding as a module, or None)."""
    if found.coding == "direct":
        return P.trace(gm), None
    body, module = strip_leading_module(gm, CQActivation if found.coding == "vr" else ICEExpand)
    if found.coding == "vr":  # the CQ activation on the raw pixels is exactly VR coding
        return body, VREncode(found.levels, found.clamp_max)
    return body, module
