"""The CQ-trained ANN shared by cq-asg, cq-if and cq-ctt (Yan, Zhou & Wong).

Built once per job and cached in the context, so the three methods convert the same network
and their curves compare like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from core.datasets import Split
from core.errors import InvalidSpec
from core.graph import patterns as P
from core.graph.analysis import is_activation, is_cq
from core.graph.canonicalize import canonicalize, trace
from core.graph.spiking import strip_leading_module
from core.methods.context import ConversionContext
from core.train import ICEExpand, VREncode, fit, to_cq, with_input_coding

CODING_TYPES = (VREncode, ICEExpand)


@dataclass
class CQNetwork:
    model: fx.GraphModule           # the CQ ANN, input coding (if any) as its first module
    body: fx.GraphModule            # the same without the input coding: what becomes the SNN
    coding: torch.nn.Module | None  # VREncode / ICEExpand, or None for direct input
    clamp_max: float
    levels: int
    window: int
    finetune: dict


def default_clamp_max(window: int) -> float:
    """The paper's choices: m = 0.25 at T = 1 (MNIST), m = 0.8 otherwise (T/L = 8/10 …)."""
    return 0.25 if window == 1 else 0.8


def resolve_surrogate_margin(window: int, margin: float | None) -> float:
    """The straight-through margin k: as asked, else 1 level at T = 1 and the paper's 0 above.

    Measured on mnist-7conv (docs/t1-recipe-sweep.md, docs/methods.md): at T = 1 the paper's
    window [0, m] lies wholly below the single step and k = 1 lifts the exact SNN by about
    2 pp; at T ≥ 2 a wider window leaves cq-asg unchanged but makes the plain-IF network
    (cq-if, cq-ctt) less faithful, so the paper's window stays the default there.
    """
    if margin is not None:
        return margin
    return 1.0 if window == 1 else 0.0


def resolve_levels(window: int, clamp_max: float | None, levels: int | None) -> tuple[float, int]:
    """(m, L) with m·L = T; L wins when both are given and disagree only by rounding."""
    if levels is not None:
        return window / levels, levels
    m = clamp_max if clamp_max is not None else default_clamp_max(window)
    levels = max(1, round(window / m))
    return window / levels, levels


def _uploaded_cq_levels(gm: fx.GraphModule) -> tuple[float, int] | None:
    """(m, L) of a model whose activations are all CQ with one (m, L), else None."""
    activations = [gm.get_submodule(str(n.target)) for n in gm.graph.nodes
                   if is_activation(P.module_of(gm, n))]
    if not activations or not all(is_cq(a) for a in activations):
        return None
    settings = {(a.clamp_max, a.levels) for a in activations}
    if len(settings) != 1:
        raise InvalidSpec(f"CQ activations disagree on (m, L): {sorted(settings)}")
    return settings.pop()


def _coding(encoding: str, m: float, levels: int, ctx: ConversionContext):
    if encoding == "direct":
        return None
    if encoding == "vr":
        return VREncode(levels, m)
    if ctx.spec.mean is not None:
        raise InvalidSpec("vr-ice codes raw pixels in [0, 1]: drop mean/std for this job")
    return ICEExpand(levels, m, grids=ctx.spec.cq.ice_grids, copies=ctx.spec.cq.ice_copies)


def build_cq_network(ctx: ConversionContext) -> CQNetwork:
    """Reuse an uploaded CQ model (fine-tuning epochs 0) or fine-tune the ANN with CQ."""
    if "cq" in ctx.cache:
        return ctx.cache["cq"]
    options = ctx.spec.cq
    uploaded = _uploaded_cq_levels(ctx.ann)
    if options.finetune_epochs == 0:
        if uploaded is None:
            raise InvalidSpec("finetune_epochs = 0 needs a CQ-trained model (clamp → ×L → floor "
                              "→ ÷L after every layer); give epochs ≥ 1 to fine-tune this one")
        m, levels = uploaded
        window = round(m * levels)
        model, margin = trace(ctx.ann), None
    else:
        window = ctx.spec.timesteps
        m, levels = resolve_levels(window, options.clamp_max, options.levels)
        margin = resolve_surrogate_margin(window, options.surrogate_margin)
        model = to_cq(_finetune_start(ctx, window), m, levels, surrogate_margin=margin)
    coding = _coding(options.encoding, m, levels, ctx)
    if coding is not None:
        model = with_input_coding(model, coding)
    finetune = ({"epochs": 0, "source": "uploaded CQ model"} if options.finetune_epochs == 0
                else _finetune(ctx, model, margin))
    model = canonicalize(model).to(ctx.device).eval()
    body, stripped = strip_leading_module(model, CODING_TYPES)
    network = CQNetwork(model=model, body=body, coding=stripped, clamp_max=m, levels=levels,
                        window=window, finetune=finetune)
    ctx.cache["cq"] = network
    return network


def _finetune_start(ctx: ConversionContext, window: int) -> fx.GraphModule:
    """The network fine-tuning starts from: with BatchNorm unfolded, or folded.

    Measured on mnist-7conv (docs/paper-reproduction.md): at T = 1 (m = 0.25) the folded
    network cannot learn the narrow clamp (chance accuracy) while BN re-learns each layer's
    scale; at T ≥ 2 both give the same CQ ANN, but re-trained BN statistics make the plain
    IF network (cq-if, cq-ctt) far less faithful, so the folded network is the default there.
    """
    keep = ctx.spec.cq.keep_batchnorm
    if keep is None:
        keep = window == 1
    return ctx.trainable if keep else ctx.ann


def _finetune(ctx: ConversionContext, model: fx.GraphModule, margin: float) -> dict:
    options = ctx.spec.cq

    def report(fraction: float, message: str) -> None:
        ctx.progress("finetune", fraction, message)

    result = fit(model, Split(ctx.train_x, ctx.train_y), epochs=options.finetune_epochs,
                 lr=options.learning_rate, batch_size=min(ctx.spec.batch_size, 128),
                 optimizer=options.optimizer, lr_decay=options.lr_decay,
                 augment=options.augment, seed=ctx.spec.seed, device=ctx.device,
                 progress=report)
    return {"epochs": options.finetune_epochs, "source": "fine-tuned from the uploaded ANN",
            "batchnorm": "kept" if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                       for m in model.modules()) else "folded",
            "optimizer": options.optimizer, "learning_rate": options.learning_rate,
            "lr_decay": options.lr_decay,
            "surrogate_margin": margin,
            "final_loss": result.final_loss, "train_top1": result.train_accuracy,
            "seconds": round(result.seconds, 2)}


def cq_parameters(cq: CQNetwork, ctx: ConversionContext) -> dict:
    return {"T": cq.window, "L": cq.levels, "m": cq.clamp_max, "encoding": ctx.spec.cq.encoding,
            "finetune": cq.finetune}


def spiking_depth(gm: fx.GraphModule) -> int:
    """The largest number of activations on any path from input to output."""
    depth: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        before = max((depth[a] for a in node.all_input_nodes), default=0)
        depth[node] = before + int(is_activation(P.module_of(gm, node)))
    return max(depth.values(), default=0)

