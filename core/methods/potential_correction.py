"""Post-conversion calibration of IF networks: a per-channel initial-potential correction,
layer by layer (after Li et al., "A free lunch from ANN", ICML 2021).

For the IF layers l = 1 … L in graph order, on the first ``batches`` calibration batches:

    q_l[c] = mean of clamp(z_l, 0, a_c)            the reference ANN's activation, as far as
                                                   spikes of amplitude a_c can carry it
    r_l[c] = a_c · Σ_t s_l[t] / (N_c · T)          the SNN layer's mean output over T, with
                                                   the corrections of layers < l in place
    Δu_l(0)[c] += (q_l[c] − r_l[c]) · T · θ_c / a_c

An IF neuron's spike count over T is about (u(0) + Σ_t I[t]) / θ, so raising u(0) by Δu moves
its mean output by a·Δu / (θ·T): the correction cancels the layer's mean error at T given the
layers before it.  Deterministic (the same batches in order, no randomness); memory: one batch
and its chunk of steps at a time, and per-channel sums.
"""

from __future__ import annotations

import itertools

import torch
from torch import fx

from core.methods.context import ConversionContext
from core.neurons import IFNeuron, channel_sums, neurons_of, reset_state, set_steps
from core.simulate import bytes_per_sample_step, chunk_steps
from core.snn import SpikingNetwork


def _reference_means(reference: fx.GraphModule, names: list[str], neurons: dict[str, IFNeuron],
                     batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """q_l per channel: the mean of the reference activation clamped to [0, a]."""
    totals: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_module, _args, output):
            amplitude = neurons[name].amplitude.to(output.device)
            shape = (1, -1) + (1,) * (output.dim() - 2) if amplitude.numel() > 1 else ()
            clipped = torch.minimum(output.clamp(min=0), amplitude.view(shape))
            totals[name] = totals.get(name, 0) + channel_sums(clipped).double()
            counts[name] = counts.get(name, 0) + clipped.numel() // clipped.shape[1]
        return record

    handles = [reference.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        for x in batches:
            reference(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: totals[name] / counts[name] for name in names}


def _snn_means(snn: SpikingNetwork, neurons: dict[str, IFNeuron], batches: list[torch.Tensor],
               chunk: int) -> dict[str, torch.Tensor]:
    """r_l per channel: each IF layer's mean output a·(spikes / T) over the batches."""
    steps = snn.timesteps
    totals: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for x in batches:
        reset_state(snn.network)
        snn.encoder.begin(x)
        for start in range(0, steps, chunk):
            stop = min(steps, start + chunk)
            set_steps(snn.network, stop - start)
            snn.network(snn.encoder.steps(start, stop))
        for name, neuron in neurons.items():
            count = neuron.spike_count
            totals[name] = totals.get(name, 0) + channel_sums(count).double()
            counts[name] = counts.get(name, 0) + count.numel() // count.shape[1]
    reset_state(snn.network)
    return {name: (totals[name] / (counts[name] * steps))
            * neurons[name].amplitude.double().to(totals[name].device) for name in neurons}


def correct_potentials(snn: SpikingNetwork, ctx: ConversionContext,
                       batches: int) -> SpikingNetwork:
    """``snn`` with every IF layer's u(0) corrected per channel (in place); the mean output
    gaps |q − r| before and after, averaged over channels and layers, go to its parameters."""
    if batches <= 0 or snn.mode != "if":
        return snn
    neurons = {name: n for name, n in neurons_of(snn.network).items()
               if isinstance(n, IFNeuron)}
    if not neurons:
        return snn
    device = ctx.device
    snn.network.to(device).eval()
    reference = snn.reference.to(device).eval()
    data = list(itertools.islice(ctx.calibration_batches(), batches))
    chunk = chunk_steps(snn.timesteps, ctx.spec.batch_size,
                        bytes_per_sample_step(reference, ctx.sample_shape),
                        ctx.spec.memory_budget_mb, device)
    gaps_before, gaps_after = [], []
    with torch.inference_mode():
        targets = _reference_means(reference, list(neurons), neurons, data)
        for index, (name, neuron) in enumerate(neurons.items()):
            produced = _snn_means(snn, neurons, data, chunk)[name]
            gap = targets[name] - produced
            gaps_before.append(float(gap.abs().mean()))
            theta = neuron.threshold.double().to(gap.device)
            amplitude = neuron.amplitude.double().to(gap.device)
            offset = neuron.initial_offset.double().to(gap.device) \
                + gap * snn.timesteps * theta / amplitude
            neuron.initial_offset = offset.float()
            ctx.progress("calibrate", (index + 1) / len(neurons),
                         f"potential correction of {name}")
        produced = _snn_means(snn, neurons, data, chunk)
        gaps_after = [float((targets[name] - produced[name]).abs().mean()) for name in neurons]
    snn.parameters = {**snn.parameters, "potential_correction_batches": batches,
                      "potential_correction_gap_before": sum(gaps_before) / len(gaps_before),
                      "potential_correction_gap_after": sum(gaps_after) / len(gaps_after)}
    return snn
