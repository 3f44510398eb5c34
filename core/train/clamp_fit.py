"""Rescale a ReLU network, without changing what it computes, so its activations fit [0, m].

CQ fine-tuning clamps every activation at m (0.8, or 0.25 at T = 1).  A network trained with
ReLU has activations on whatever scale training gave it (often several units), so the clamp
first cuts most of its signal and the fine-tuning spends its epochs shrinking weights back.
ReLU is positively homogeneous, relu(s·z) = s·relu(z) for s > 0, so each rectifying layer can
be moved onto the clamp's scale beforehand:

    z_l → s_l · z_l  (the producer's weight and bias ×s_l, or an explicit ×s_l),
    a_l → a_l / s_l  (each consumer's weight ×1/s_l, or an explicit ×1/s_l),
    s_l = m / λ_l,   λ_l = argmin_λ E[(a − (λ/m)·q(a·m/λ))²],  q(x) = floor(clamp(x, 0, m)·L)/L,

which leaves the network's output unchanged while each layer's activations a now meet the
clamp and the T + 1 levels where the CQ activation loses least of them (λ from 64 candidates
up to the layer's maximum, on a bounded sample of calibration activations).  A high
percentile (the robust normalisation of Rueckauer 2017) would be the choice for many levels;
at T = 1 or 2 it would leave nearly every unit silent, because floor quantisation sends
everything below the first level m/T to zero.  Where a consumer is not a
conv/linear (a residual add, pooling), the ×1/s_l stays in the graph as a constant scaling,
which is linear in spike rates and converts as such.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterator

import torch
from torch import fx, nn

from core.calibrate import visit_outputs
from core.graph import patterns as P
from core.graph.canonicalize import recognise_activations
from core.graph.modules import ClampedReLU, cq_quantize

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
_AFFINE_PRODUCERS = _WEIGHTED + P.BATCHNORM_MODULES


def _modules_called_once(gm: fx.GraphModule) -> set[str]:
    """Modules whose weights can be rescaled for one use: called by exactly one node."""
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    return {target for target, count in calls.items() if count == 1}


def _scale_output(module: nn.Module, factor: float) -> bool:
    """Multiply what ``module`` produces by ``factor`` in place; False when it cannot."""
    if getattr(module, "weight", None) is None:
        return False
    with torch.no_grad():
        module.weight.mul_(factor)
        if module.bias is not None:
            module.bias.mul_(factor)
    return True


def _insert_scaling(gm: fx.GraphModule, source: fx.Node, factor: float,
                    users: list[fx.Node]) -> None:
    P.insert_after(gm, source, "call_function", operator.mul, (source, factor), users)


def _scale_activation_input(gm: fx.GraphModule, node: fx.Node, factor: float,
                            once: set[str]) -> None:
    producer = node.args[0]
    module = P.module_of(gm, producer)
    foldable = (isinstance(module, _AFFINE_PRODUCERS) and len(producer.users) == 1
                and str(producer.target) in once)
    if not (foldable and _scale_output(module, factor)):
        _insert_scaling(gm, producer, factor, [node])


def _scale_activation_output(gm: fx.GraphModule, node: fx.Node, factor: float,
                             once: set[str]) -> None:
    rest = []
    for user in list(node.users):
        module = P.module_of(gm, user)
        if isinstance(module, _WEIGHTED) and str(user.target) in once:
            with torch.no_grad():
                module.weight.mul_(factor)
        else:
            rest.append(user)
    if rest:
        _insert_scaling(gm, node, factor, rest)


SAMPLES_PER_LAYER = 1 << 18
CANDIDATES = 64


def _activation_samples(gm: fx.GraphModule, names: list[str],
                        batches: Callable[[], Iterator[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Up to SAMPLES_PER_LAYER activations per layer, every k-th element (deterministic)."""
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def visit(name: str, out: torch.Tensor) -> None:
        flat = out.detach().reshape(-1)
        if sum(part.numel() for part in kept[name]) < SAMPLES_PER_LAYER:
            stride = max(1, flat.numel() // 4096)
            kept[name].append(flat[::stride].float().cpu())

    visit_outputs(gm, names, batches, visit)
    return {name: torch.cat(parts) if parts else torch.zeros(1) for name, parts in kept.items()}


def least_loss_level(values: torch.Tensor, clamp_max: float, levels: int) -> float:
    """λ whose CQ quantisation of ``values`` (rescaled by m/λ) has the least squared error."""
    top = float(values.max())
    if top <= 0:
        return 0.0
    best, best_error = top, float("inf")
    for fraction in torch.linspace(1.0 / CANDIDATES, 1.0, CANDIDATES).tolist():
        level = top * fraction
        scale = clamp_max / level
        quantised = cq_quantize(values * scale, clamp_max, levels)
        error = float(((values - quantised / scale) ** 2).mean())
        if error < best_error:
            best, best_error = level, error
    return best


def scale_to_clamp(model: nn.Module, clamp_max: float, levels: int,
                   batches: Callable[[], Iterator[torch.Tensor]]) -> fx.GraphModule:
    """A copy of ``model`` rescaled to the clamp (see the module doc).

    Activations that never fired in calibration are left as they are.
    """
    gm = recognise_activations(model)
    nodes = [n for n in gm.graph.nodes if isinstance(P.module_of(gm, n), ClampedReLU)]
    samples = _activation_samples(gm, [str(n.target) for n in nodes], batches)
    once = _modules_called_once(gm)
    for node in nodes:
        level = least_loss_level(samples[str(node.target)], clamp_max, levels)
        if level <= 0:
            continue
        factor = clamp_max / level
        _scale_activation_input(gm, node, factor, once)
        _scale_activation_output(gm, node, 1.0 / factor, once)
        activation = P.module_of(gm, node)
        if activation.clamp_max is not None:
            activation.clamp_max *= factor
    return P.finish(gm, prune=False)
