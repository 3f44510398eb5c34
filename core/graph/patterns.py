"""Small predicates over torch.fx nodes: what a node computes, looked up by op and target."""

from __future__ import annotations

import operator
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn

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
