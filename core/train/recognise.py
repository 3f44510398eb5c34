"""Recognise what an uploaded, already CQ-trained graph was trained with.

A CQ model exported by snnconv (or by the authors' code) carries its input coding as ordinary
ops at the input: VR is the CQ chain itself applied to the pixels, floor(clamp(p, 0, m)·L)/L,
which canonicalisation turns into a ``CQActivation`` fed by the input; ICE is a channel
concatenation of such chains on the grids L−k … L+k, each floor(clamp(p, 0, T/g)·g)/L.
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
from core.graph.canonicalize import trace
from core.graph.modules import ClampedReLU
from core.train.input_coding import ICEExpand, VREncode


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
        return None if self.levels is None else round(self.clamp_max * self.levels)

    def describe(self) -> dict:
        if not self.is_cq:
            return {"cq": False}
        described = {"cq": True, "L": self.levels, "m": self.clamp_max, "T": self.window,
                     "coding": self.coding}
        if self.coding == "vr-ice":
            described |= {"ice_grids": self.ice_grids, "ice_copies": self.ice_copies}
        return described


def cq_levels(gm: fx.GraphModule, ignore: frozenset[fx.Node] = frozenset()
              ) -> tuple[float, int] | None:
    """(m, L) of a graph whose activations (but ``ignore``) are all CQ with one (m, L)."""
    activations = [P.module_of(gm, n) for n in gm.graph.nodes
                   if n not in ignore and is_activation(P.module_of(gm, n))]
    if not activations or not all(is_cq(a) for a in activations):
        return None
    settings = {(a.clamp_max, a.levels) for a in activations}
    if len(settings) != 1:
        raise InvalidSpec(f"the CQ activations of this model disagree on (m, L): "
                          f"{sorted(settings)}; snnconv converts one (m, L) per network")
    return settings.pop()


def _input(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


def _vr_node(gm: fx.GraphModule, source: fx.Node, m: float, levels: int) -> fx.Node | None:
    """The CQActivation(m, L) applied directly to the input, if that is its only use."""
    users = list(source.users)
    if len(users) != 1:
        return None
    module = P.module_of(gm, users[0])
    if is_cq(module) and (module.clamp_max, module.levels) == (m, levels):
        return users[0]
    return None


def _grid_of(gm: fx.GraphModule, node: fx.Node, source: fx.Node, window: int,
             levels: int) -> int | None:
    """g for a chain floor(clamp(p, 0, T/g)·g)/L ending at ``node``, else None."""
    module = P.module_of(gm, node)
    if is_cq(module) and node.args[0] is source:
        return module.levels if (module.levels, module.window) == (levels, window) else None
    if not P.is_function(node, P.DIV_TARGETS) or P.scalar_constant(gm, node.args[1]) != levels:
        return None
    floor = node.args[0]
    if not (P.is_function(floor, P.FLOOR_FUNCTIONS) or P.is_method(floor, {"floor"})):
        return None
    mul = floor.args[0]
    if not isinstance(mul, fx.Node) or not P.is_function(mul, P.MUL_TARGETS):
        return None
    clamp, scale = mul.args
    if not isinstance(clamp, fx.Node):
        clamp, scale = scale, clamp
    clamp_module = P.module_of(gm, clamp)
    grid = P.scalar_constant(gm, scale)
    if not isinstance(clamp_module, ClampedReLU) or clamp.args[0] is not source or grid is None:
        return None
    if abs(grid - round(grid)) > 1e-6 or clamp_module.clamp_max is None \
            or abs(clamp_module.clamp_max * grid - window) > 1e-4:
        return None
    return round(grid)


def _concat_after(node: fx.Node, steps: int = 4) -> fx.Node | None:
    """The concatenation that a short single-user chain from ``node`` ends in, if any."""
    for _ in range(steps):
        if len(node.users) != 1:
            return None
        node = next(iter(node.users))
        if P.is_function(node, P.CONCAT_FUNCTIONS):
            return node
    return None


def _ice_node(gm: fx.GraphModule, source: fx.Node, m: float,
              levels: int) -> tuple[fx.Node, int, int] | None:
    """(concat node, grids, copies) when the input is coded by ICE around L."""
    ends = {_concat_after(user) for user in source.users}
    if len(ends) != 1 or None in ends:
        return None
    concat = ends.pop()
    if P.node_arg(concat, 1, "dim", 0) not in (1, -3):
        return None
    window = round(m * levels)
    grids = [_grid_of(gm, part, source, window, levels) for part in concat.args[0]]
    if None in grids or len(grids) < 2:
        return None
    for count in range(1, len(grids) + 1, 2):
        half = count // 2
        expected = [g for g in range(levels - half, levels + half + 1) if g > 0]
        if len(grids) % len(expected) == 0 and grids == expected * (len(grids) // len(expected)):
            return concat, count, len(grids) // len(expected)
    return None


def _replace_input_block(gm: fx.GraphModule, end: fx.Node) -> fx.GraphModule:
    """The graph with the coding block that ends at ``end`` removed (its users read x)."""
    result = trace(gm)
    end = next(n for n in result.graph.nodes if n.name == end.name)
    end.replace_all_uses_with(_input(result))
    result.graph.eliminate_dead_code()
    result.delete_all_unused_submodules()
    result.recompile()
    return result


def detect(gm: fx.GraphModule) -> CQDetection:
    """Whether ``gm`` (canonical form) is CQ-trained, its (m, L), and the coding at its input."""
    source = _input(gm)
    grid_clamps = frozenset(u for u in source.users
                            if isinstance(P.module_of(gm, u), ClampedReLU))
    levels_found = cq_levels(gm, ignore=grid_clamps)
    if levels_found is None:
        return CQDetection()
    m, levels = levels_found
    if _vr_node(gm, source, m, levels) is not None:
        return CQDetection(levels=levels, clamp_max=m, coding="vr")
    ice = _ice_node(gm, source, m, levels)
    if ice is not None:
        return CQDetection(levels=levels, clamp_max=m, coding="vr-ice", ice_grids=ice[1],
                           ice_copies=ice[2])
    if grid_clamps:  # clamps on the raw input that form no coding we know: not a CQ graph
        return CQDetection()
    return CQDetection(levels=levels, clamp_max=m)


def split_input_coding(gm: fx.GraphModule,
                       found: CQDetection) -> tuple[fx.GraphModule, nn.Module | None]:
    """(``gm`` without its detected input coding, the coding as a module, or None)."""
    if found.coding == "direct":
        return trace(gm), None
    source = _input(gm)
    if found.coding == "vr":
        end = _vr_node(gm, source, found.clamp_max, found.levels)
        coding: nn.Module = VREncode(found.levels, found.clamp_max)
    else:
        end = _ice_node(gm, source, found.clamp_max, found.levels)[0]
        coding = ICEExpand(found.levels, found.clamp_max, grids=found.ice_grids,
                           copies=found.ice_copies)
    return _replace_input_block(gm, end), coding
