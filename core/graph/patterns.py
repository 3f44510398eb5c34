"""The torch.fx vocabulary every pass shares.

What a node computes, looked up by op and target (predicates and the CQ quantisation chain);
tracing with our own modules kept whole; fresh attribute names, node insertion and finishing
a graph; the arguments of a functional max pooling; reachability along users.
"""

from __future__ import annotations

import copy
import itertools
import operator
from dataclasses import dataclass
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.errors import UnsupportedModel
from core.graph.modules import (
    INPUT_CODINGS,
    ChannelAffine,
    ClampedReLU,
    CQActivation,
    QCFSActivation,
)

ADD_TARGETS = {operator.add, torch.add, operator.sub, torch.sub}
MUL_TARGETS = {operator.mul, torch.mul}
DIV_TARGETS = {operator.truediv, torch.div}
RELU_FUNCTIONS = {torch.relu, F.relu, torch.relu_}
RELU6_FUNCTIONS = {F.relu6}
CLAMP_FUNCTIONS = {torch.clamp, torch.clip}
FLOOR_FUNCTIONS = {torch.floor}
SOFTMAX_FUNCTIONS = {torch.softmax, F.softmax, torch.log_softmax, F.log_softmax}
DROPOUT_FUNCTIONS = {F.dropout, F.dropout2d, F.alpha_dropout}
SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute,
                   operator.getitem, getattr, torch.Tensor.size}
SHAPE_METHODS = {"view", "reshape", "flatten", "size", "squeeze", "unsqueeze", "contiguous",
                 "permute", "transpose"}
CONCAT_FUNCTIONS = {torch.cat, torch.concat}
POOL_FUNCTIONS = {F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean}
PAD_FUNCTIONS = {F.pad}

DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.Identity)
SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
SYNAPTIC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad2d)
BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a call_module node calls, else None."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def is_function(node: fx.Node, targets: set) -> bool:
    return node.op == "call_function" and node.target in targets


def is_method(node: fx.Node, names: set[str]) -> bool:
    return node.op == "call_method" and node.target in names


def constant_value(gm: fx.GraphModule, arg) -> float | torch.Tensor | None:
    """The value of an argument that does not depend on the input, else None."""
    if isinstance(arg, Number) and not isinstance(arg, bool):
        return float(arg)
    if isinstance(arg, torch.Tensor):
        return arg
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        value = gm
        for part in str(arg.target).split("."):
            value = getattr(value, part)
        return value
    return None


def scalar_constant(gm: fx.GraphModule, arg) -> float | None:
    """A constant argument that is a single number (Python scalar or one-element tensor)."""
    value = constant_value(gm, arg)
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0]) if value.numel() == 1 else None
    return value


def node_arg(node: fx.Node, index: int, keyword: str, default=None):
    """Positional-or-keyword argument lookup, as torch functions accept both."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(keyword, default)


def data_inputs(node: fx.Node) -> list[fx.Node]:
    """Input nodes that carry data (not constants fetched with get_attr)."""
    return [n for n in node.all_input_nodes if n.op != "get_attr"]


def single_user(node: fx.Node) -> fx.Node | None:
    """The one node that uses ``node``, else None."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def graph_input(gm: fx.GraphModule) -> fx.Node:
    """The graph's (first) placeholder: the model input."""
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


def reaches(node: fx.Node, hit, passes=lambda _node: True) -> bool:
    """Whether a user-chain from ``node`` reaches a node for which ``hit`` holds, walking
    only through nodes for which ``passes`` holds."""
    frontier, seen = list(node.users), set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        if hit(current):
            return True
        if passes(current):
            frontier.extend(current.users)
    return False


def op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """A readable operation name for reports: the module class or the function name."""
    if node.op == "call_module":
        return type(module_of(gm, node)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


class LeafTracer(fx.Tracer):
    """Keeps our own activation, affine and input-coding modules as single call_module nodes."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        leaves = (ClampedReLU, ChannelAffine, CQActivation, QCFSActivation, *INPUT_CODINGS)
        return isinstance(module, leaves) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """A GraphModule for any model (a copy; modules already traced are copied too)."""
    duplicate = copy.deepcopy(model)
    if isinstance(duplicate, fx.GraphModule):
        return duplicate
    try:
        graph = LeafTracer().trace(duplicate)
    except Exception as error:  # fx raises many types for untraceable control flow
        raise UnsupportedModel(
            f"the model could not be traced symbolically ({error}); remove data-dependent "
            "control flow or export it to ONNX first") from error
    return fx.GraphModule(duplicate, graph, type(duplicate).__name__)


def fresh_name(gm: fx.GraphModule, base: str, *, numbered: bool = False) -> str:
    """An attribute name ``gm`` does not have yet: ``base`` (dots → _), else ``base_1``,
    ``base_2`` …; with ``numbered`` always suffixed, from ``base_0``."""
    stem = base.replace(".", "_")
    numbers = (f"{stem}_{index}" for index in itertools.count(0 if numbered else 1))
    candidates = numbers if numbered else itertools.chain([stem], numbers)
    return next(name for name in candidates if not hasattr(gm, name))


def insert_after(gm: fx.GraphModule, source: fx.Node, op: str, target, args: tuple,
                 users: list[fx.Node] | None = None) -> fx.Node:
    """A new node ``op``/``target`` on ``args`` right after ``source``; ``users`` of source (all
    of them by default) read the new node instead."""
    users = list(source.users) if users is None else users
    with gm.graph.inserting_after(source):
        new = gm.graph.create_node(op, target, args)
    for user in users:
        user.replace_input_with(source, new)
    return new


def insert_module_after(gm: fx.GraphModule, source: fx.Node, module: nn.Module, base: str,
                        users: list[fx.Node] | None = None, *,
                        numbered: bool = False) -> fx.Node:
    """Add ``module`` under a fresh name from ``base`` and call it on ``source`` right after
    it; ``users`` of source (all by default) read its result instead."""
    name = fresh_name(gm, base, numbered=numbered)
    gm.add_submodule(name, module)
    return insert_after(gm, source, "call_module", name, (source,), users)


def replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module,
                        source: fx.Node, base: str) -> fx.Node:
    """Insert ``module(source)`` before ``node`` and route node's users to it (the caller
    erases ``node``)."""
    name = fresh_name(gm, base)
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    return new


def finish(gm: fx.GraphModule, *, prune: bool = True) -> fx.GraphModule:
    """Check and recompile ``gm`` after an edit; ``prune`` first drops dead nodes and the
    submodules no node calls any more."""
    if prune:
        gm.graph.eliminate_dead_code()
    gm.graph.lint()
    if prune:
        gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


MAX_POOL_PARAMETERS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                       "return_indices")


def max_pool_arguments(node: fx.Node) -> dict:
    """The arguments a functional max pooling was called with, by parameter name (only those
    given: the function's own defaults apply to the rest)."""
    return dict(zip(MAX_POOL_PARAMETERS, node.args, strict=False)) | dict(node.kwargs)


def _scale_factor(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> float | None:
    """For ``source·k`` (or ``k·source``) return k; for ``source/k`` return 1/k."""
    if is_function(node, MUL_TARGETS):
        other = node.args[1] if node.args[0] is source else node.args[0]
        return scalar_constant(gm, other)
    if is_function(node, DIV_TARGETS) and node.args[0] is source:
        divisor = scalar_constant(gm, node.args[1])
        return None if not divisor else 1.0 / divisor
    return None


@dataclass(frozen=True)
class QuantiseChain:
    """clamp(z, 0, m) → ×up → floor [→ ×down], as a graph spells floor-quantisation.

    ``end``/``down`` are None when the floor's result is not rescaled on its own (ICE divides
    the concatenation of its grids by L once).
    """

    clamp: fx.Node
    mul: fx.Node | None  # None for ×1, which exporters fold away
    floor: fx.Node
    up: float
    end: fx.Node | None = None
    down: float | None = None


def quantise_chain(gm: fx.GraphModule, clamp: fx.Node) -> QuantiseChain | None:
    """The single-user chain ×up → floor (→ ÷ or ×) that follows a ClampedReLU(m) node."""
    module = module_of(gm, clamp)
    if not isinstance(module, ClampedReLU) or module.clamp_max is None:
        return None
    def is_floor(node: fx.Node | None) -> bool:
        return node is not None and (is_function(node, FLOOR_FUNCTIONS)
                                     or is_method(node, {"floor"}))

    mul = single_user(clamp)
    if is_floor(mul):
        mul, floor, up = None, mul, 1.0
    else:
        floor = single_user(mul) if mul is not None else None
        up = _scale_factor(gm, mul, clamp) if is_floor(floor) else None
    if up is None or up <= 0:
        return None
    end = single_user(floor)
    down = _scale_factor(gm, end, floor) if end is not None else None
    return QuantiseChain(clamp=clamp, mul=mul, floor=floor, up=up,
                         end=end if down is not None else None, down=down)
