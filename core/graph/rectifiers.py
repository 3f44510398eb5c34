"""Activations a spiking neuron cannot stand in for, and what to tell the user instead.

An integrate-and-fire neuron's firing rate is a non-negative, monotone, piecewise-linear
function of its input — a (clamped) ReLU.  Smooth, signed or non-monotone activations (GELU,
SiLU, Sigmoid, Tanh, LeakyReLU, ELU...) have no rate equivalent, so the only fix is to train
with a rectifier.  The importer (ONNX operators) and the pre-flight (traced torch modules)
both refuse them with the same advice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.graph import patterns as P

NON_RECTIFIER_MODULES: dict[type[nn.Module], str] = {
    nn.GELU: "GELU", nn.SiLU: "SiLU", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh",
    nn.LeakyReLU: "LeakyReLU", nn.ELU: "ELU", nn.SELU: "SELU", nn.CELU: "CELU",
    nn.Softplus: "Softplus", nn.Hardswish: "Hardswish", nn.Hardsigmoid: "Hardsigmoid",
    nn.Mish: "Mish", nn.PReLU: "PReLU", nn.RReLU: "RReLU", nn.Softsign: "Softsign",
    nn.LogSigmoid: "LogSigmoid", nn.Tanhshrink: "Tanhshrink",
}
NON_RECTIFIER_FUNCTIONS: dict[object, str] = {
    F.gelu: "GELU", F.silu: "SiLU", torch.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid",
    torch.tanh: "Tanh", F.tanh: "Tanh", F.leaky_relu: "LeakyReLU", F.elu: "ELU",
    F.selu: "SELU", torch.selu: "SELU", F.celu: "CELU", F.softplus: "Softplus",
    F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid", F.mish: "Mish", F.prelu: "PReLU",
    F.logsigmoid: "LogSigmoid", torch.erf: "GELU",
}
NON_RECTIFIER_METHODS: dict[str, str] = {"sigmoid": "Sigmoid", "tanh": "Tanh"}


def non_rectifier_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The PyTorch name of the non-rectifier activation ``node`` computes, else None."""
    module = P.module_of(gm, node)
    if module is not None:
        return NON_RECTIFIER_MODULES.get(type(module))
    if node.op == "call_function":
        return NON_RECTIFIER_FUNCTIONS.get(node.target)
    return NON_RECTIFIER_METHODS.get(str(node.target)) if node.op == "call_method" else None
