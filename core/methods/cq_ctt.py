"""cq-ctt: IF neurons whose per-channel thresholds are tuned against an ASG teacher (CTT).

    θ_l[c] ← m initially;  for each training batch, layer by layer:
        diff_c = (Σ y[:, c] − Σ x[:, c]) / (B·H·W·T)      (teacher minus student spike rate)
        θ_l[c] ← θ_l[c] − η · diff_c · m

x are the IF network's spikes (current thresholds), y the ASG teacher's.  Within a batch
every layer's student spikes come from the thresholds before the update, so all layers can
be updated together after one pass.  Spikes keep amplitude m (the weights are fixed); only
when a neuron fires changes.  With ``spike_finetune_epochs`` > 0 the weights are then
fine-tuned through this IF network, thresholds kept (core.train.spike_finetune).
Afterwards only the plain IF network runs: anytime, T steps.
"""

from __future__ import annotations

import numpy as np
import torch

from core.graph.spiking import to_spiking
from core.methods.balancing import anytime_latency
from core.methods.context import ConversionContext
from core.methods.cq import (
    CQNetwork,
    build_cq_network,
    cq_encoder,
    if_neuron,
    if_parameters,
    spike_finetuned,
)
from core.neurons import ASGNeuron, channel_sums, neurons_of, reset_state, set_steps
from core.snn import SpikingNetwork

MIN_THRESHOLD_FRACTION = 0.05


def tune_thresholds(ctx: ConversionContext, cq: CQNetwork) -> tuple[dict[str, torch.Tensor],
                                                                      list[float]]:
    """Run CTT over ``ctt_batches`` training batches; return thresholds and the mean |gap|."""
    options, steps = ctx.spec.cq, cq.window
    student = to_spiking(cq.body, lambda _n, _a: if_neuron(cq, ctx))
    teacher = to_spiking(cq.body, lambda _n, _a: ASGNeuron(cq.clamp_max, cq.levels))
    student, teacher = student.to(ctx.device), teacher.to(ctx.device)
    neurons, teachers = neurons_of(student), neurons_of(teacher)
    encoder = cq_encoder(cq)
    order = np.random.default_rng(ctx.spec.seed).permutation(len(ctx.train_x))
    size, gaps = ctx.spec.batch_size, []
    floor = MIN_THRESHOLD_FRACTION * cq.clamp_max
    with torch.no_grad():
        for index in range(options.ctt_batches):
            rows = order[(index * size) % len(order):][:size]
            x = torch.from_numpy(ctx.train_x[rows]).to(ctx.device)
            encoder.begin(x)
            teacher(encoder.window_mean(steps))
            reset_state(student)
            set_steps(student, steps)
            student(encoder.steps(0, steps))
            gap = 0.0
            for name, neuron in neurons.items():
                count = neuron.spike_count
                per_position = count.numel() / count.shape[1] * steps
                diff = (channel_sums(teachers[name].spike_count) - channel_sums(count))
                diff = diff / per_position
                theta = neuron.threshold.expand_as(diff) - options.ctt_eta * diff * cq.clamp_max
                neuron.threshold = theta.clamp(min=floor)
                gap += float(diff.abs().mean())
            gaps.append(gap / max(len(neurons), 1))
            ctx.progress("calibrate", (index + 1) / options.ctt_batches,
                         f"CTT batch {index + 1}/{options.ctt_batches}")
    reset_state(student)
    return {name: neuron.threshold.detach().cpu().clone() for name, neuron in neurons.items()}, gaps


def convert(ctx: ConversionContext) -> SpikingNetwork:
    cq = build_cq_network(ctx)
    thresholds, gaps = tune_thresholds(ctx, cq)
    body, tuning = spike_finetuned(ctx, cq, "cq-ctt", thresholds)
    network = to_spiking(body, lambda name, _act: if_neuron(cq, ctx, thresholds[name]))
    parameters = {**if_parameters(cq, ctx, tuning), "ctt_eta": ctx.spec.cq.ctt_eta,
                  "ctt_batches": ctx.spec.cq.ctt_batches,
                  "ctt_rate_gap_first": gaps[0] if gaps else None,
                  "ctt_rate_gap_last": gaps[-1] if gaps else None}
    return SpikingNetwork(method="cq-ctt", network=network, reference=cq.model,
                          encoder=cq_encoder(cq), timesteps=cq.window,
                          latency=anytime_latency(cq.window), parameters=parameters)
