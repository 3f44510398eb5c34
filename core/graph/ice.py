"""Recognise ICE input coding in an uploaded graph and give it back its one module.

A CQ network trained with input channel expansion (Yan, Zhou & Wong) carries the coding as
ordinary ops at its input: for each grid g = L−k … L+k a chain floor(clamp(p, 0, T/g)·g),
the chains concatenated on channels (the block repeated ``copies`` times) and divided by L —
per chain, or once after the concatenation, as ``ICEExpand`` computes it.  Left as ops, the
floors have no spiking equivalent and the clamps look like plain activations; as one
``ICEExpand`` module the graph converts like the network it was trained as, and its coding
can be read off for the SNN's input encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from core.graph import patterns as P
from core.graph.modules import ClampedReLU, CQActivation, ICEExpand


@dataclass(frozen=True)
class _Grid:
    grid: int          # g, the chain's multiplier
    window: float      # T = clamp_max · g
    divisor: int | None  # L when the chain divides by L itself, else None


def _grid_of(gm: fx.GraphModule, user: fx.Node) -> tuple[fx.Node, _Grid] | None:
    """(chain end, its grid) for a chain floor(clamp(p, 0, T/g)·g) [÷L] starting at ``user``."""
    module = P.module_of(gm, user)
    if isinstance(module, CQActivation):  # the chain on the grid g = L, already recognised
        return user, _Grid(module.levels, module.window, module.levels)
    chain = P.quantise_chain(gm, user)
    if chain is None or not isinstance(module, ClampedReLU):
        return None
    grid = round(chain.up)
    if abs(grid - chain.up) > 1e-6:
        return None
    window = module.clamp_max * grid
    if chain.down is None:
        return chain.floor, _Grid(grid, window, None)
    divisor = 1.0 / chain.down
    if abs(divisor - round(divisor)) > 1e-6:
        return None
    return chain.end, _Grid(grid, window, round(divisor))


def _divisor_after(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, int] | None:
    """(the ÷L node, L) when ``node``'s single user divides it by a whole number."""
    user = P.single_user(node)
    if user is None or not P.is_function(user, P.DIV_TARGETS) or user.args[0] is not node:
        return None
    divisor = P.scalar_constant(gm, user.args[1])
    if divisor is None or abs(divisor - round(divisor)) > 1e-6 or divisor < 1:
        return None
    return user, round(divisor)


def _grids_and_copies(grids: list[int], levels: int) -> tuple[int, int] | None:
    """(grid count, copies) when ``grids`` is [L−k … L+k] (g ≤ 0 skipped) repeated."""
    for count in range(1, len(grids) + 1, 2):
        half = count // 2
        expected = [g for g in range(levels - half, levels + half + 1) if g > 0]
        if len(grids) % len(expected) == 0 and grids == expected * (len(grids) // len(expected)):
            return count, len(grids) // len(expected)
    return None


def _ice_block(gm: fx.GraphModule, source: fx.Node):
    """(last node of the block, ICEExpand) when ``source`` is coded by ICE, else None."""
    chains = dict(found for user in source.users if (found := _grid_of(gm, user)) is not None)
    if len(chains) < 2 or len(chains) != len(source.users):
        return None
    consumers = {user for end in chains for user in end.users}
    concat = consumers.pop() if len(consumers) == 1 else None
    if concat is None or not P.is_function(concat, P.CONCAT_FUNCTIONS) \
            or P.node_arg(concat, 1, "dim", 0) not in (1, -3) \
            or any(part not in chains for part in concat.args[0]):
        return None
    parts = [chains[part] for part in concat.args[0]]
    divisors = {part.divisor for part in parts}
    windows = {round(part.window, 4) for part in parts}
    if len(divisors) != 1 or len(windows) != 1:
        return None
    end, levels = (concat, divisors.pop()) if None not in divisors else \
        (_divisor_after(gm, concat) or (None, None))
    if end is None:
        return None
    window = round(windows.pop())
    shape = _grids_and_copies([part.grid for part in parts], levels)
    if shape is None or window < 1:
        return None
    return end, ICEExpand(levels, window / levels, grids=shape[0], copies=shape[1])


def recognise_ice(gm: fx.GraphModule) -> fx.GraphModule:
    """An ICE coding block at the input becomes one ``ICEExpand`` module (see module doc)."""
    gm = P.trace(gm)
    source = P.graph_input(gm)
    found = _ice_block(gm, source)
    if found is None:
        return gm
    end, coding = found
    P.replace_with_module(gm, end, coding, source, "input_encoder")
    gm.graph.erase_node(end)
    return P.finish(gm)
