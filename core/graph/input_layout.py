"""Fit a model that permutes its input (e.g. NHWC → NCHW) to a dataset's NCHW samples.

Models written for channels-last data often start with ``x.permute(0, 3, 1, 2)`` and are
exported taking ``[N, H, W, C]``.  Our datasets hold ``[C, H, W]`` samples — the layout that
permute produces — so dropping it makes the graph take the dataset's samples directly, with
every later layer seeing exactly what it saw before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from core.errors import InvalidSpec
from core.graph import patterns as P
from core.preflight import NodeVerdict

PERMUTE_FUNCTIONS = {torch.permute}
TRANSPOSE_FUNCTIONS = {torch.transpose, torch.swapaxes, torch.swapdims}


@dataclass(frozen=True)
class InputLayout:
    """The model to run on the dataset's samples and the nodes removed to get it."""

    module: fx.GraphModule
    removed: list[NodeVerdict] = field(default_factory=list)


def adapt_input_layout(gm: fx.GraphModule, model_sample_shape: tuple[int, ...],
                       dataset_sample_shape: tuple[int, ...],
                       dataset_name: str = "the dataset") -> InputLayout:
    """``gm`` unchanged when it takes the dataset's sample shape; else a copy without the
    leading permute that turns its input into that shape.

    Raises ``InvalidSpec`` (naming both shapes and why) when the shapes differ and no such
    permute can be removed; ``gm`` itself is never mutated.
    """
    model_shape, data_shape = tuple(model_sample_shape), tuple(dataset_sample_shape)
    if model_shape == data_shape:
        return InputLayout(module=gm)
    mismatch = (f"the model takes inputs of shape {list(model_shape)} but {_dataset(dataset_name)}"
                f" has samples of shape {list(data_shape)}")
    if sorted(model_shape) != sorted(data_shape):
        raise InvalidSpec(mismatch)
    adapted = P.trace(gm)
    node, perm = _input_permute(adapted, len(model_shape) + 1, mismatch)
    _require_layout_fix(perm, model_shape, data_shape, mismatch)
    verdict = NodeVerdict(
        name=node.name, op=P.op_name(adapted, node), status="removed",
        detail=f"input permute {list(perm)} removed: the samples of {_dataset(dataset_name)} "
               f"{list(data_shape)} already have the layout it turned the model's "
               f"{list(model_shape)} input into")
    placeholder = node.all_input_nodes[0]
    node.replace_all_uses_with(placeholder)
    if "probe" in placeholder.meta:  # the importer's shape record now describes NCHW input
        placeholder.meta["probe"] = node.meta.get("probe")
    adapted.graph.erase_node(node)
    return InputLayout(module=P.finish(adapted, prune=False), removed=[verdict])


def _dataset(name: str) -> str:
    return name if name == "the dataset" else f"dataset '{name}'"


def _input_permute(gm: fx.GraphModule, rank: int,
                   mismatch: str) -> tuple[fx.Node, tuple[int, ...]]:
    """The single permute that reads the graph input, with its full permutation."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    users = list(placeholders[0].users) if len(placeholders) == 1 else []
    perm = permutation_of(users[0], rank) if len(users) == 1 else None
    if perm is None:
        raise InvalidSpec(
            f"{mismatch}; the shapes are a permutation of each other, but the model's input is "
            "not read by a single permute/transpose that could be removed: re-export the model "
            "taking channels-first (NCHW) input like the dataset's samples")
    return users[0], perm


def permutation_of(node: fx.Node, rank: int | None = None) -> tuple[int, ...] | None:
    """The permutation of all axes (batch included) that a permute or transpose node applies,
    or None when ``node`` is neither or its axes are not constants.

    ``rank`` is the input's rank; a transpose needs it, a permute names every axis anyway.
    """
    if P.is_function(node, PERMUTE_FUNCTIONS) or P.is_method(node, {"permute"}):
        dims = node.args[1:] if len(node.args) > 2 else P.node_arg(node, 1, "dims")
        perm = _axes(dims, rank or len(dims)) if isinstance(dims, tuple | list) else None
        return perm if perm is not None and sorted(perm) == list(range(len(perm))) else None
    if rank is not None and (P.is_function(node, TRANSPOSE_FUNCTIONS)
                             or P.is_method(node, {"transpose"})):
        pair = _axes([P.node_arg(node, 1, "dim0"), P.node_arg(node, 2, "dim1")], rank)
        if pair is None:
            return None
        perm = list(range(rank))
        perm[pair[0]], perm[pair[1]] = pair[1], pair[0]
        return tuple(perm)
    return None


def _axes(dims, rank: int) -> tuple[int, ...] | None:
    """``dims`` as non-negative axes of a rank-``rank`` tensor, or None if they are not."""
    if not all(type(d) is int for d in dims):
        return None
    return tuple(d % rank for d in dims) if all(-rank <= d < rank for d in dims) else None


def _require_layout_fix(perm: tuple[int, ...], model_shape: tuple[int, ...],
                        data_shape: tuple[int, ...], mismatch: str) -> None:
    """The permute must keep the batch first, produce the dataset's shape and move only the
    channel axis: then the dataset's [C, H, W] sample is exactly what the model computes on.

    A permute that also reorders the spatial axes (e.g. [0, 3, 2, 1]) would feed the model
    transposed images, so it is refused rather than silently accepted.
    """
    full = (None, *model_shape)
    if perm[0] != 0 or tuple(full[axis] for axis in perm) != (None, *data_shape):
        raise InvalidSpec(f"{mismatch}; the model's input permute {list(perm)} does not "
                          "turn its input into the dataset's layout")
    if list(perm[2:]) != sorted(perm[2:]):
        raise InvalidSpec(f"{mismatch}; the model's input permute {list(perm)} also reorders "
                          "the spatial axes, so the dataset's samples cannot be fed to it by "
                          "removing it: re-export the model taking NCHW input")
