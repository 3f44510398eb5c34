"""What conversion will do with each node: the data behind the pre-flight report."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.errors import UnsupportedModel, rectifier_advice
from core.graph import patterns as P
from core.graph.input_layout import permutation_of
from core.graph.modules import (
    INPUT_CODINGS,
    ChannelAffine,
    ClampedReLU,
    CQActivation,
    QCFSActivation,
)
from core.graph.rectifiers import non_rectifier_kind
from core.preflight import NodeVerdict, PreflightReport

LINEAR_MODULES = P.SYNAPTIC_MODULES + P.SHAPE_MODULES + (ChannelAffine,)
RESIDUAL_TARGETS = P.ADD_TARGETS | P.CONCAT_FUNCTIONS


def is_activation(module: nn.Module | None) -> bool:
    """True for the modules the converter turns into spiking neurons."""
    return isinstance(module, (ClampedReLU, CQActivation, QCFSActivation))


def is_cq(module: nn.Module | None) -> bool:
    return isinstance(module, CQActivation)


def is_input_coding(module: nn.Module | None) -> bool:
    return isinstance(module, INPUT_CODINGS)


def activation_names(gm: fx.GraphModule) -> list[str]:
    """Targets of the activation modules, in execution order."""
    return [str(n.target) for n in gm.graph.nodes if is_activation(P.module_of(gm, n))]


def _both_data(node: fx.Node) -> bool:
    return len(P.data_inputs(node)) >= 2


def _function_verdict(gm: fx.GraphModule, node: fx.Node) -> tuple[str, str]:
    if P.is_function(node, P.ADD_TARGETS):
        return "passed-through", "residual add" if _both_data(node) else "constant offset"
    if P.is_function(node, P.MUL_TARGETS | P.DIV_TARGETS):
        if _both_data(node):
            return "unsupported", "product of two activations is not linear in spike rates"
        return "passed-through", "constant scaling"
    if P.is_function(node, P.CONCAT_FUNCTIONS):
        return "passed-through", "concatenation"
    if P.is_function(node, P.SHAPE_FUNCTIONS):
        return "passed-through", "reshape"
    if P.is_function(node, P.POOL_FUNCTIONS):
        return "passed-through", "average pooling (linear)"
    if P.is_function(node, P.PAD_FUNCTIONS):
        mode = P.node_arg(node, 2, "mode", "constant")
        value = P.node_arg(node, 3, "value", 0.0) or 0.0
        if mode == "constant" and value == 0.0:
            return "passed-through", "zero padding"
        return "unsupported", f"padding mode {mode!r} value {value} is not linear"
    if P.is_function(node, {F.max_pool2d}):
        return "converted", "max pooling gated by accumulated spike count"
    return "unsupported", "no spiking equivalent"


def _module_verdict(module: nn.Module) -> tuple[str, str]:
    if is_cq(module):
        return "converted", f"CQ activation (m={module.clamp_max:g}, L={module.levels}) → neuron"
    if isinstance(module, QCFSActivation):
        return "converted", f"QCFS activation (L={module.levels}) → IF neuron, θ = λ, u(0) = θ/2"
    if isinstance(module, ClampedReLU):
        bound = "" if module.clamp_max is None else f" clamped at {module.clamp_max:g}"
        return "converted", f"ReLU{bound} → integrate-and-fire neuron"
    if isinstance(module, nn.MaxPool2d):
        return "converted", "max pooling gated by accumulated spike count"
    if is_input_coding(module):
        return "converted", "input coding (VR / ICE): its spike counts spread over the window"
    if isinstance(module, P.BATCHNORM_MODULES):
        return "passed-through", "batch normalisation (per-channel affine)"
    if isinstance(module, LINEAR_MODULES):
        return "passed-through", "linear"
    return "unsupported", "no spiking equivalent"


def _input_permute_detail(node: fx.Node) -> str | None:
    """What happens to a permute of the model input (an NHWC model's ``permute(0, 3, 1, 2)``)."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node) or source.op != "placeholder":
        return None
    probe = source.meta.get("probe")  # the importer records every value's shape
    perm = permutation_of(node, probe.dim() if probe is not None else None)
    if perm is None:
        return None
    return (f"input layout permute {list(perm)}: a conversion job removes it when the dataset's "
            "samples already have the layout it produces (e.g. NCHW for an NHWC model)")


def classify(gm: fx.GraphModule) -> list[NodeVerdict]:
    """One verdict per computing node (placeholders, constants and the output are omitted)."""
    verdicts = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if (permute := _input_permute_detail(node)) is not None:
            status, detail = "passed-through", permute
        elif (kind := non_rectifier_kind(gm, node)) is not None:
            status, detail = "unsupported", f"{kind} is not a rectifier: no neuron represents it"
        elif node.op == "call_module":
            status, detail = _module_verdict(P.module_of(gm, node))
        elif node.op == "call_method":
            if P.is_method(node, P.SHAPE_METHODS):
                status, detail = "passed-through", "reshape"
            else:
                status, detail = "unsupported", "no spiking equivalent"
        else:
            status, detail = _function_verdict(gm, node)
        verdicts.append(NodeVerdict(name=node.name, op=P.op_name(gm, node), status=status,
                                    detail=detail))
    return verdicts


def preflight(gm: fx.GraphModule, *, fmt: str, input_shape: tuple[int, ...],
              removed: list[NodeVerdict] | None = None) -> PreflightReport:
    """The compatibility report of a canonical graph."""
    verdicts = (removed or []) + classify(gm)
    activations = [n for n in gm.graph.nodes if is_activation(P.module_of(gm, n))]
    cq_count = sum(is_cq(P.module_of(gm, n)) for n in activations)
    problems = [f"{v.op} ({v.name}): {v.detail}" for v in verdicts if v.status == "unsupported"]
    kinds = {kind for n in gm.graph.nodes if (kind := non_rectifier_kind(gm, n)) is not None}
    if kinds:
        problems.append(rectifier_advice(kinds))
    if not activations:
        problems.append("no ReLU-like activation found: nothing would become a spiking neuron")
    warnings = []
    if 0 < cq_count < len(activations):  # the classic methods still convert it
        warnings.append("mixes CQ and plain activations: CQ methods need CQ everywhere")
    with torch.no_grad():
        try:
            out = gm(torch.zeros(2, *input_shape))
            num_outputs = int(out.shape[-1]) if out.dim() == 2 else None
        except Exception as error:  # the model itself fails on its declared input shape
            problems.append(f"model fails on an input of shape {list(input_shape)}: {error}")
            num_outputs = None
    return PreflightReport(
        format=fmt, input_shape=list(input_shape), num_outputs=num_outputs,
        convertible=not problems, spiking_layers=len(activations), cq_layers=cq_count,
        nodes=verdicts, problems=problems + warnings,
    )


def require_convertible(report: PreflightReport) -> None:
    """Raise UnsupportedModel naming every problem when conversion cannot proceed."""
    if not report.convertible:
        raise UnsupportedModel(
            "model cannot be converted: " + "; ".join(report.problems),
            details={"problems": report.problems},
        )
