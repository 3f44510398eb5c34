"""The CQ-trained ANN shared by cq-asg, cq-if and cq-ctt (Yan, Zhou & Wong).

Built once per job and kept in the context (``ctx.cq_network``), so the three methods convert
the same network and their curves compare like for like.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from core.datasets import Split
from core.encoders import CountEncoder, DirectEncoder, InputEncoder
from core.errors import InvalidSpec
from core.graph import patterns as P
from core.graph.analysis import is_activation, is_cq
from core.graph.canonicalize import TRAINING_PASSES, canonicalize
from core.graph.modules import ICEExpand, VREncode
from core.graph.spiking import strip_leading_module
from core.methods.context import ConversionContext, CQNetwork
from core.neurons import IFNeuron
from core.train import fit, to_cq, with_input_coding
from core.train.batchnorm import with_fresh_batchnorm
from core.train.clamp_fit import scale_to_clamp
from core.train.recognise import split_input_coding
from core.train.spike_finetune import copy_parameters, spike_trainable

CODING_TYPES = (VREncode, ICEExpand)


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


def _coding(encoding: str, m: float, levels: int, ctx: ConversionContext):
    if encoding == "direct":
        return None
    if encoding == "vr":
        return VREncode(levels, m)
    if ctx.spec.mean is not None:
        raise InvalidSpec("vr-ice codes raw pixels in [0, 1]: drop mean/std for this job")
    return ICEExpand(levels, m, grids=ctx.spec.cq.ice_grids, copies=ctx.spec.cq.ice_copies)


def build_cq_network(ctx: ConversionContext) -> CQNetwork:
    """The CQ ANN the paper's methods convert: the upload itself when it is already CQ-trained
    and fine-tuning is off, else the upload fine-tuned with CQ (at its own L and m if it is CQ).

    ``ctx.spec`` has its defaults resolved (core.job_defaults); ``ctx.detection`` says what
    the upload is.
    """
    if ctx.cq_network is not None:
        return ctx.cq_network
    options, found = ctx.spec.cq, ctx.detection
    if found.is_cq:
        window, m, levels = found.window, found.clamp_max, found.levels
    else:
        window = ctx.spec.timesteps
        m, levels = resolve_levels(window, options.clamp_max, options.levels)
    margin = resolve_surrogate_margin(window, options.surrogate_margin)
    tuning = options.finetune_epochs > 0
    start = _finetune_start(ctx, window) if tuning else ctx.ann
    model, uploaded_coding = split_input_coding(start, found)  # a copy of ctx's network
    if tuning and found.is_cq:
        _set_margin(model, margin)
    elif tuning:
        if options.fit_scale:
            model = scale_to_clamp(model, m, levels, ctx.calibration_batches)
        model = to_cq(model, m, levels, surrogate_margin=margin)
    coding = (uploaded_coding if options.encoding == found.coding
              else _coding(options.encoding, m, levels, ctx))
    if coding is not None:  # the upload's own coding: its first layer already fits it
        model = with_input_coding(model, coding, widen=coding is not uploaded_coding)
    finetune = _finetune(ctx, model, margin) if tuning else {
        "epochs": 0, "source": "uploaded CQ model, converted as it is"}
    model = canonicalize(model).to(ctx.device).eval()
    body, stripped = strip_leading_module(model, CODING_TYPES)
    network = CQNetwork(model=model, body=body, coding=stripped, clamp_max=m, levels=levels,
                        window=window, finetune=finetune)
    ctx.cq_network = network
    return network


def cq_encoder(cq: CQNetwork) -> InputEncoder:
    """VR/ICE counts spread over the window (spikes of amplitude m), or the analog input."""
    return DirectEncoder() if cq.coding is None else CountEncoder(cq.coding, cq.clamp_max)


def if_neuron(cq: CQNetwork, ctx: ConversionContext,
              threshold: torch.Tensor | float | None = None) -> IFNeuron:
    """The plain IF neuron of cq-if and cq-ctt: θ = m unless given (CTT), spikes of amplitude
    m, reset by subtraction, u(0) = ``initial_membrane``·θ."""
    return IFNeuron(cq.clamp_max if threshold is None else threshold, amplitude=cq.clamp_max,
                    reset="subtract", initial_fraction=ctx.spec.cq.initial_membrane)


def spike_finetuned(ctx: ConversionContext, cq: CQNetwork, method: str,
                    thresholds: dict[str, torch.Tensor] | None = None
                    ) -> tuple[fx.GraphModule, dict | None]:
    """The body an IF method converts, and what its spike-aware fine-tuning did.

    With ``spike_finetune_epochs`` = 0 (the paper's recipe) that is the CQ network's body,
    unchanged, and None.  Otherwise a copy of it fine-tuned through its own IF network
    (core.train.spike_finetune), each layer's neurons as the method will run them (θ = m, or
    ``thresholds[name]`` from CTT); the CQ network the methods share is left as it is.
    The CQ ANN with the tuned weights is kept in ``ctx.tuned_networks[method]``.
    """
    epochs = ctx.spec.cq.spike_finetune_epochs
    if epochs == 0:
        return cq.body, None
    trainable = spike_trainable(cq.body, cq_encoder(cq), cq.window, lambda name: if_neuron(
        cq, ctx, None if thresholds is None else thresholds[name]))
    trained = train_with_job_options(ctx, trainable, epochs, "spike-aware fine-tuning",
                     ctx.spec.cq.spike_learning_rate)
    model = copy.deepcopy(cq.model)
    copy_parameters(trainable.network, model)
    ctx.tuned_networks[method] = model.eval()
    body, _coding = strip_leading_module(model, CODING_TYPES)
    return body, trained


def if_parameters(cq: CQNetwork, ctx: ConversionContext, spike_finetune: dict | None) -> dict:
    """cq_parameters plus the IF neurons' start and the spike-aware fine-tuning, if any."""
    parameters = {**cq_parameters(cq, ctx), "initial_membrane": ctx.spec.cq.initial_membrane}
    if spike_finetune is not None:
        parameters["spike_finetune"] = spike_finetune
    return parameters


def _set_margin(model: fx.GraphModule, margin: float) -> None:
    """Give the uploaded CQ activations the straight-through window of this job."""
    for module in model.modules():
        if is_cq(module):
            module.surrogate_margin = margin


def _finetune_start(ctx: ConversionContext, window: int) -> fx.GraphModule:
    """The network fine-tuning starts from: with BatchNorm, or with BN folded.

    Measured on mnist-7conv (docs/paper-reproduction.md): at T = 1 (m = 0.25) the folded
    network cannot learn the narrow clamp (chance accuracy) while BN re-learns each layer's
    scale; at T ≥ 2 both give the same CQ ANN, but re-trained BN statistics make the plain
    IF network (cq-if, cq-ctt) far less faithful, so the folded network is the default there.
    With BN, the upload's own BN layers are kept and every conv/linear that has none (an
    ONNX export folds them all) gets a fresh one that leaves the function unchanged.
    """
    keep = ctx.spec.cq.keep_batchnorm
    if keep is None:
        keep = window == 1
    if not keep:
        return ctx.ann
    unfolded = canonicalize(ctx.trainable, TRAINING_PASSES)
    return with_fresh_batchnorm(unfolded, ctx.calibration_batches)


def _batchnorm_source(model: fx.GraphModule, ctx: ConversionContext) -> str:
    """How the fine-tuned network got its BatchNorm layers, for the report."""
    def count(module) -> int:
        return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())

    total, uploaded = count(model), count(ctx.trainable)
    if total == 0:
        return "folded"
    if uploaded == 0:
        return f"{total} fresh, identity-initialised (the upload had its BN folded)"
    if total > uploaded:
        return f"{uploaded} kept from the upload, {total - uploaded} fresh"
    return "kept from the upload"


def train_with_job_options(ctx: ConversionContext, model: nn.Module, epochs: int, what: str,
                           lr: float | None = None, *, augment: bool | None = None,
                           lr_decay: float | None = None) -> dict:
    """Fine-tune ``model`` with the job's CQ training options (``lr``, ``augment`` and
    ``lr_decay`` instead of theirs where given); what the report records."""
    options = ctx.spec.cq
    lr = options.learning_rate if lr is None else lr
    augment = options.augment if augment is None else augment
    lr_decay = options.lr_decay if lr_decay is None else lr_decay

    def report(fraction: float, message: str) -> None:
        ctx.progress("finetune", fraction, f"{what}: {message}")

    result = fit(model, Split(ctx.train_x, ctx.train_y), epochs=epochs, lr=lr,
                 batch_size=min(ctx.spec.batch_size, 128), optimizer=options.optimizer,
                 lr_decay=lr_decay, augment=augment, seed=ctx.spec.seed,
                 device=ctx.device, progress=report)
    return {"epochs": epochs, "optimizer": options.optimizer,
            "learning_rate": lr, "lr_decay": lr_decay, "augment": augment,
            "final_loss": result.final_loss, "train_top1": result.train_accuracy,
            "seconds": round(result.seconds, 2)}


def _finetune(ctx: ConversionContext, model: fx.GraphModule, margin: float) -> dict:
    trained = train_with_job_options(ctx, model, ctx.spec.cq.finetune_epochs, "CQ fine-tuning")
    return {"epochs": trained.pop("epochs"), "source": "fine-tuned from the uploaded ANN",
            "batchnorm": _batchnorm_source(model, ctx), **trained,
            "surrogate_margin": margin}


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

