"""qcfs (Bu et al., "Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency
spiking neural networks", ICLR 2022): fine-tune with the quantisation–clip–floor–shift
activation, then convert to plain IF neurons.

Every ReLU becomes a = (λ/L)·floor(clamp(z/λ, 0, 1)·L + ½) (``QCFSActivation``) with one
trainable clip λ per layer, starting at the layer's clip percentile of activations; max
pooling becomes average pooling.  After fine-tuning each activation becomes an IF neuron
with θ = λ, spikes of amplitude λ, reset by subtraction and u(0) = θ/2; the input is the
analog image (direct coding), the output layer integrates its current.  Anytime readout,
end-to-end latency T.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from core.calibrate import activation_percentiles
from core.encoders import DirectEncoder
from core.graph.analysis import activation_names
from core.graph.canonicalize import canonicalize, recognise_activations
from core.graph.modules import ClampedReLU, CQActivation, QCFSActivation
from core.graph.spiking import to_spiking
from core.methods.balancing import anytime_latency, positive_thresholds
from core.methods.context import ConversionContext
from core.methods.cq import train_with_job_options
from core.neurons import IFNeuron
from core.snn import SpikingNetwork
from core.spec import QCFSSchedule
from core.train import to_qcfs
from core.train.spike_finetune import copy_parameters, spike_trainable

# Bu et al. train with L = 4 (CIFAR) or 8 (ImageNet) and evaluate at any T; a window shorter
# than L leaves the upper levels out of reach, so L follows T up to 8.
MAX_DEFAULT_LEVELS = 8
HALF_THRESHOLD = 0.5


def resolve_qcfs_levels(window: int, levels: int | None) -> int:
    """L as asked, else min(T, 8)."""
    return levels if levels is not None else min(window, MAX_DEFAULT_LEVELS)


def relu_form(model: fx.GraphModule) -> fx.GraphModule:
    """A copy with each CQ activation of a CQ-trained upload relaxed to its clamp, so that
    QCFS re-quantises it on its own levels."""
    relaxed = recognise_activations(model)
    for name, module in list(relaxed.named_modules()):
        if isinstance(module, CQActivation):
            relaxed.add_submodule(name, ClampedReLU(module.clamp_max))
    relaxed.recompile()
    return relaxed


@dataclass
class QCFSNetwork:
    """The fine-tuned QCFS ANN (canonical, eval mode, on the job's device), its levels and
    what its training did (for the report)."""

    model: fx.GraphModule
    levels: int
    training: dict


def build_qcfs_network(ctx: ConversionContext) -> QCFSNetwork:
    options = ctx.spec.qcfs
    levels = resolve_qcfs_levels(ctx.spec.timesteps, options.levels)
    start = relu_form(ctx.ann)
    clips = activation_percentiles(start, activation_names(start), ctx.calibration_batches,
                                   percentile=options.clip_percentile, per_channel=False)
    model = to_qcfs(start, levels, {name: float(positive_thresholds(value).max())
                                    for name, value in clips.items()}).to(ctx.device)
    schedule = options.schedule()
    training = {"epochs": 0}
    if schedule.finetune_epochs > 0:
        training = _train(ctx, schedule, model, schedule.finetune_epochs, "QCFS fine-tuning")
    model = canonicalize(model).to(ctx.device)
    if schedule.spike_finetune_epochs > 0:
        training["spike_finetune"] = _spike_finetune(ctx, schedule, model)
    return QCFSNetwork(model=model.eval(), levels=levels, training=training)


def _train(ctx: ConversionContext, schedule: QCFSSchedule, model: nn.Module, epochs: int,
           what: str) -> dict:
    return train_with_job_options(ctx, model, epochs, what, ctx.spec.qcfs.learning_rate,
                                  augment=schedule.augment, lr_decay=schedule.lr_decay)


def _if_neuron(activation: QCFSActivation) -> IFNeuron:
    """θ = a = λ, reset by subtraction, u(0) = θ/2."""
    clip = activation.clip_value()
    return IFNeuron(clip, amplitude=clip, reset="subtract", initial_fraction=HALF_THRESHOLD)


def _spike_finetune(ctx: ConversionContext, schedule: QCFSSchedule,
                    model: fx.GraphModule) -> dict:
    """Train ``model``'s weights (in place) through its own IF network at T, the clips fixed
    as the thresholds (core.train.spike_finetune)."""
    activations = dict(model.named_modules())
    trainable = spike_trainable(model, DirectEncoder(), ctx.spec.timesteps,
                                lambda name: _if_neuron(activations[name]))
    trained = _train(ctx, schedule, trainable, schedule.spike_finetune_epochs,
                     "spike-aware fine-tuning")
    copy_parameters(trainable.network, model)
    return trained


def convert(ctx: ConversionContext) -> SpikingNetwork:
    qcfs = build_qcfs_network(ctx)
    steps = ctx.spec.timesteps
    clips = {name: round(module.clip_value(), 4) for name, module in qcfs.model.named_modules()
             if isinstance(module, QCFSActivation)}
    return SpikingNetwork(
        method="qcfs", network=to_spiking(qcfs.model, lambda _name, act: _if_neuron(act)),
        reference=qcfs.model,
        encoder=DirectEncoder(), timesteps=steps, latency=anytime_latency(steps),
        parameters={"L": qcfs.levels, "preset": ctx.spec.qcfs.preset,
                    "input_encoding": "direct", "reset": "subtract",
                    "initial_membrane": "0.5·θ", "clip_percentile": ctx.spec.qcfs.clip_percentile,
                    "clips": clips, "finetune": qcfs.training})
