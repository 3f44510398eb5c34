"""Give a network whose BatchNorm was folded away (every ONNX export) fresh BatchNorm layers.

The T = 1 fine-tuning recipe needs BN: with the clamp at m = 0.25 each layer has to re-learn
its scale, which a folded network cannot do (docs/methods.md).  Exporters fold BN into the
convolutions, so an ONNX upload arrives without it.  A fresh BN is inserted after every
conv/linear that feeds a spiking layer and has none, initialised from calibration data so
that the network computes exactly the same function in eval mode:

    running_mean = E[z],  running_var = Var[z],  γ = √(Var[z] + ε),  β = E[z]
    ⇒ BN(z) = (z − E[z]) / √(Var[z] + ε) · γ + β = z.

In training mode the batch statistics stand in for E and Var, so the start is the identity up
to sampling noise: the uploaded ANN's accuracy is where fine-tuning starts, as it is for the
same network uploaded with its BN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import fx, nn

from core.calibrate import visit_outputs
from core.graph import patterns as P
from core.graph.analysis import is_activation

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_BATCHNORM_FOR = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}


def _needs_batchnorm(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A conv/linear feeding a spiking layer, not already followed by its own BatchNorm."""
    if not isinstance(P.module_of(gm, node), _LAYERS):
        return False
    if any(isinstance(P.module_of(gm, user), P.BATCHNORM_MODULES) for user in node.users):
        return False
    return P.reaches(node, hit=lambda n: is_activation(P.module_of(gm, n)))


class _Moments:
    """Per-channel running sums of z and z² over calibration batches (float64)."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, None, None

    def add(self, z: torch.Tensor) -> None:
        channels = z.transpose(0, 1).reshape(z.shape[1], -1).double()
        self.count += channels.shape[1]
        total, squares = channels.sum(1), (channels ** 2).sum(1)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        return mean.float(), (self.squares / self.count - mean ** 2).clamp_min(0).float()


def _moments(gm: fx.GraphModule, names: list[str],
             batches: Callable[[], Iterator[torch.Tensor]]) -> dict[str, _Moments]:
    moments = {name: _Moments() for name in names}
    visit_outputs(gm, names, batches, lambda name, out: moments[name].add(out))
    return moments


def identity_batchnorm(layer: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> nn.Module:
    """A BatchNorm that, in eval mode, returns its input unchanged for these statistics."""
    bn = _BATCHNORM_FOR[type(layer)](mean.numel()).to(mean.device)
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
    return bn


def with_fresh_batchnorm(model: nn.Module,
                         batches: Callable[[], Iterator[torch.Tensor]]) -> fx.GraphModule:
    """A copy of ``model`` with an identity-initialised BN after every conv/linear lacking one.

    ``batches()`` yields calibration inputs (what the model's first layer receives).
    """
    gm = P.trace(model).eval()
    targets = [n for n in gm.graph.nodes if _needs_batchnorm(gm, n)]
    if not targets:
        return gm
    moments = _moments(gm, [str(n.target) for n in targets], batches)
    for node in targets:
        layer = gm.get_submodule(str(node.target))
        mean, var = moments[str(node.target)].mean_var()
        P.insert_module_after(gm, node, identity_batchnorm(layer, mean, var),
                              f"{node.target}_bn")
    return P.finish(gm, prune=False).eval()  # the fresh layers were created in training mode
