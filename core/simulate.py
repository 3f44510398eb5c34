"""Simulate a converted network once for T steps and read out every t ≤ T.

One run gives, after each step t, top-1/top-5 accuracy and agreement with the reference
ANN's prediction (argmax of the output current accumulated up to t), cumulative synaptic
operations, and per-layer statistics at T.  Stateless layers run on a chunk of steps at
once (time folded into the batch); the chunk length follows the memory budget (and on a CPU
the cache, ``chunk_steps``).  IF neurons run fused with the factors and pooling after them
(``core.graph.fusion``) on a compiled kernel (``core.if_kernel``).  On request (``per_sample``)
each batch's per-sample readout after every t (prediction, margin, synaptic operations) also
goes to a sink, for early exit (``core.early_exit``); the summary stays bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from core.early_exit import BatchTrace, output_margin
from core.energy import analog_layers, device_of, microjoules, synaptic_fanouts
from core.graph.fusion import fuse_if_outputs
from core.graph.layout import (
    as_channels_last,
    channels_last,
    flat_in_memory_order,
    memory_order,
)
from core.graph.spiking import (
    constant_input_is_safe,
    modules_downstream_of,
    nodes_downstream_of,
    terminal_activations,
)
from core.hardware import DEFAULT_PROFILE
from core.neurons import FusedIFNeuron, MultiStep, neurons_of, reset_state, set_steps
from core.report import LayerStats, MethodResult
from core.snn import SpikingNetwork

StepProgress = Callable[[float, list[float]], None]
SampleSink = Callable[[BatchTrace], None]


@dataclass
class _LayerTally:
    kind: str
    threshold: torch.Tensor
    neurons: int = 0
    rate: float = 0.0
    saturated: float = 0.0
    silent: float = 0.0
    error: float = 0.0


@dataclass
class _Tally:
    steps: int
    samples: int = 0
    top1: np.ndarray = field(init=False)
    top5: np.ndarray = field(init=False)
    agree: np.ndarray = field(init=False)
    sops: np.ndarray = field(init=False)
    reference_correct: int = 0
    layers: dict[str, _LayerTally] = field(default_factory=dict)

    def __post_init__(self):
        self.top1, self.top5, self.agree, self.sops = (np.zeros(self.steps) for _ in range(4))

    def add_readout(self, start: int, outputs: torch.Tensor, labels: torch.Tensor,
                    reference: torch.Tensor) -> None:
        """``outputs``: accumulated output current [steps, B, K] for steps start, start+1, …"""
        stop = start + outputs.shape[0]
        self.top1[start:stop] += topk_correct(outputs, labels, 1).cpu().numpy()
        self.top5[start:stop] += topk_correct(outputs, labels, 5).cpu().numpy()
        self.agree[start:stop] += (outputs.argmax(-1) == reference).sum(-1).cpu().numpy()

    def fractions(self, values: np.ndarray) -> list[float]:
        return [float(v) / max(self.samples, 1) for v in values]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their label among the k largest logits (over the last-but-one dim)."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return (top == labels.unsqueeze(-1)).any(-1).sum(-1)


@dataclass
class _Count:
    """One synaptic layer's events × fan-out over one call, per step."""

    layer: str
    total: torch.Tensor            # [steps], summed over the batch
    samples: torch.Tensor | None   # [steps, B], when the counter keeps samples apart


class _SynapticCounter:
    """Forward pre-hooks that count spike events × fan-out at each synaptic layer.

    Each hook call covers a whole chunk of steps; its counts stay on the device (no sync)
    and are kept per layer in call order, so a caller can re-sum them exactly as they came.
    With ``per_sample`` each count also keeps its samples apart (for early exit); the batch
    totals are summed as without it, so they stay bit-identical.
    """

    def __init__(self, network: fx.GraphModule, fanouts: dict[str, torch.Tensor],
                 skip: set[str], per_sample: bool = False):
        device = device_of(network)
        self.device = device
        self.fanouts = {k: v.flatten().to(device) for k, v in fanouts.items() if k not in skip}
        self.handles = [network.get_submodule(name).register_forward_pre_hook(self._hook(name))
                        for name in self.fanouts]
        # a pooling fused into its neuron: the neuron counts the events the pooling received
        self.handles += [module.register_forward_hook(self._fused_hook(name))
                         for name, module in network.named_modules()
                         if isinstance(module, FusedIFNeuron) and module.pool is not None]
        self.steps = 1
        self.event_scale: dict[str, float] | None = None  # ASG: events = value·scale
        self.recording = True
        self.per_sample = per_sample
        self.counted: list[_Count] = []
        self._scratch: torch.Tensor | None = None
        self._ordered_fanouts: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def _events(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """1.0 where ``x`` is non-zero, 0.0 elsewhere, as ``[rows, N]`` in ``x``'s memory order
        (one contiguous kernel into a reused buffer), and ``name``'s fan-out in that order.

        Counting in the memory order matters: ``ne`` from a channels-last input into an NCHW
        buffer is a strided pass ~25× slower.  The dot products are of small integers, so
        they do not depend on the order (while a sample's total stays below 2**24).
        """
        order = memory_order(x)
        if order is None or order[0] != 0:
            x, order = x.contiguous(), tuple(range(x.dim()))
        sample_order = tuple(d - 1 for d in order[1:])
        flat = flat_in_memory_order(x, sample_order)
        scratch = self._scratch
        if scratch is None or scratch.numel() < x.numel() or scratch.dtype != x.dtype \
                or scratch.device != x.device:
            scratch = self._scratch = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        events = torch.ne(flat, 0, out=scratch[:flat.numel()].view(flat.shape))
        return events, self._fanout_in(name, x.shape[1:], sample_order)

    def _fanout_in(self, name: str, shape: torch.Size, order: tuple[int, ...]) -> torch.Tensor:
        key = (name, order)
        if key not in self._ordered_fanouts:
            fanout = self.fanouts[name].view(shape)
            self._ordered_fanouts[key] = flat_in_memory_order(fanout, order).contiguous()
        return self._ordered_fanouts[key]

    def _hook(self, name: str):
        def count(module: nn.Module, args: tuple) -> None:
            if not self.recording:
                return
            x = args[0]
            if self.event_scale is None:
                events, fanout = self._events(name, x)
                events = events.view(self.steps, -1, fanout.numel())
            else:
                fanout = self.fanouts[name]
                events = (x * self.event_scale[name]).reshape(1, -1, fanout.numel())
            # per-sample sums stay well inside float32's exact integers; the batch total not
            self._keep(name, (events @ fanout).double())
        return count

    def _keep(self, name: str, samples: torch.Tensor) -> None:
        self.counted.append(_Count(name, samples.sum(1), samples if self.per_sample else None))

    def _fused_hook(self, name: str):
        def count(module: FusedIFNeuron, args: tuple, output: torch.Tensor) -> None:
            if self.recording:
                self._keep(name, module.events)
        return count

    def take(self, steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Events × fan-out per step since the last call, summed over the layers in the order
        they were counted (zeros when nothing was counted), and with ``per_sample`` the same
        per step and sample; stays on the device."""
        counted, self.counted = self.counted, []
        return self.add_up(counted, steps, batch)

    def add_up(self, counted: list[_Count], steps: int, batch: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        total = _sum_in_order([c.total for c in counted], (steps,), self.device)
        if not self.per_sample:
            return total, None
        return total, _sum_in_order([c.samples for c in counted], (steps, batch), self.device)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self._scratch = None


def _sum_in_order(values: list[torch.Tensor], shape: tuple[int, ...],
                  device: torch.device) -> torch.Tensor:
    if not values:
        return torch.zeros(shape, dtype=torch.float64, device=device)
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def _record_activations(reference: fx.GraphModule, names: list[str], x: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    captured: dict[str, torch.Tensor] = {}
    handles = [reference.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out)) for name in names]
    try:
        logits = reference(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, captured


def _add_layer_stats(tally: _Tally, neurons: dict[str, MultiStep],
                     activations: dict[str, torch.Tensor], steps: int) -> None:
    for name, neuron in neurons.items():
        threshold, amplitude = neuron.threshold, neuron.amplitude
        if name not in tally.layers:
            tally.layers[name] = _LayerTally(kind=neuron.kind, threshold=threshold.detach().cpu())
        # in the layout of the ANN activation (contiguous), so the sums add in its order
        count, activation = neuron.spike_count.contiguous(), activations[name]
        shape = (1, -1) + (1,) * (count.dim() - 2) if amplitude.numel() > 1 else ()
        amplitude = amplitude.to(count.device).view(shape)
        target = torch.clamp(activation / amplitude, 0.0, 1.0)
        rate = count / steps
        # the four sums leave the device together (float64 holds each of them exactly)
        rate_sum, saturated, silent, error = torch.stack([
            rate.sum().double(), (activation > amplitude * (1 + 1e-6)).sum().double(),
            (count == 0).sum().double(), (target - rate).abs().sum().double()]).tolist()
        layer = tally.layers[name]
        layer.neurons += count.numel()
        layer.rate += rate_sum
        layer.saturated += saturated
        layer.silent += silent
        layer.error += error


def _layer_reports(tally: _Tally) -> list[LayerStats]:
    reports = []
    for name, layer in tally.layers.items():
        n = max(layer.neurons, 1)
        reports.append(LayerStats(
            name=name, kind=layer.kind, channels=layer.threshold.numel(),
            threshold_mean=float(layer.threshold.mean()),
            threshold_min=float(layer.threshold.min()),
            threshold_max=float(layer.threshold.max()),
            firing_rate=layer.rate / n, saturated_fraction=layer.saturated / n,
            silent_fraction=layer.silent / n, rate_error=layer.error / n,
            spikes_per_sample=layer.rate * tally.steps / max(tally.samples, 1)))
    return reports


@dataclass
class _BatchProgress:
    """Reports the overall fraction after each step of a batch, with the accuracy per t over
    the batches already finished (the current one is still incomplete)."""

    callback: StepProgress | None
    done: int
    size: int
    total: int
    steps: int
    completed: list[float]

    def __call__(self, step: int) -> None:
        if self.callback is not None:
            self.callback((self.done + self.size * step / self.steps) / self.total,
                          self.completed)


def bytes_per_sample_step(reference: fx.GraphModule, sample_shape: tuple[int, ...]) -> int:
    """Memory the activations of one sample at one step need (an upper bound)."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(reference).propagate(torch.zeros(1, *sample_shape, device=device_of(reference)))
    total = sum(int(np.prod(n.meta["tensor_meta"].shape)) for n in reference.graph.nodes
                if "tensor_meta" in n.meta and hasattr(n.meta["tensor_meta"], "shape"))
    return 4 * 3 * max(total, 1)  # float32; inputs, outputs and neuron state live together


# On a CPU a convolution's working set falls out of the caches when one call carries too many
# rows (steps × batch), while short calls pay Python and dispatch overhead per call.  On the
# channels-last simulation of cnn-small at batch 100 the sweep that
# `python -m benchmarks.bench_speed` prints (benchmarks.md §6) is fastest at 800 rows for
# robust-norm (docs/performance.md gives the runs); cq-ctt is flat from 400 rows up.
CPU_ROWS_PER_CHUNK = 800


def chunk_steps(steps: int, batch_size: int, bytes_per_step: int, memory_budget_mb: float,
                device: torch.device) -> int:
    """How many time steps one call of the network carries: as many as the memory budget
    allows, and on a CPU no more than ``CPU_ROWS_PER_CHUNK`` rows."""
    fit = int(memory_budget_mb * 2**20 // (bytes_per_step * batch_size))
    if device.type == "cpu":
        fit = min(fit, CPU_ROWS_PER_CHUNK // batch_size)
    return max(1, min(steps, fit))


@dataclass
class _SampleReadout:
    """A batch's per-sample readout after every step t (rows t − 1)."""

    prediction: torch.Tensor  # [T, B]
    margin: torch.Tensor      # [T, B] output margin of the mean output per step
    sops: torch.Tensor        # [T, B] synaptic operations up to the readout after t steps

    def trace(self, labels: np.ndarray, energy_uj: Callable[[np.ndarray], np.ndarray]
              ) -> BatchTrace:
        sops = self.sops.cpu().numpy()
        return BatchTrace(prediction=self.prediction.cpu().numpy(),
                          margin=self.margin.cpu().numpy(), sops=sops,
                          energy_uj=energy_uj(sops), labels=labels)


def _simulate_if_batch(snn: SpikingNetwork, network: fx.GraphModule, x, y, reference_prediction,
                       tally, counter, chunk: int, report: Callable[[int], None],
                       layout: Callable[[torch.Tensor], torch.Tensor]) -> _SampleReadout | None:
    steps = snn.timesteps
    reset_state(network)
    snn.encoder.begin(x)
    constant = snn.encoder.analog and constant_input_is_safe(network)
    x = layout(x)
    accumulated = None
    events, readouts = [], []
    for start in range(0, steps, chunk):
        stop = min(steps, start + chunk)
        set_steps(network, stop - start, batch=len(x) if constant else None)
        counter.steps = stop - start
        out = network(x if constant else layout(snn.encoder.steps(start, stop)))
        out = out.view(stop - start, x.shape[0], -1)
        running = out.cumsum(0) if accumulated is None else accumulated + out.cumsum(0)
        accumulated = running[-1]
        tally.add_readout(start, running, y, reference_prediction)
        if counter.per_sample:  # the margin of the mean output per step, m(t) = margin / t
            elapsed = torch.arange(start + 1, stop + 1, device=running.device).view(-1, 1)
            readouts.append((running.argmax(-1), output_margin(running) / elapsed))
        events.append(counter.take(stop - start, x.shape[0]))
        report(stop)
    tally.sops += torch.cat([total for total, _ in events]).cpu().cumsum(0).numpy()
    if not counter.per_sample:
        return None
    return _SampleReadout(prediction=torch.cat([p for p, _ in readouts]),
                          margin=torch.cat([m for _, m in readouts]),
                          sops=torch.cat([samples for _, samples in events]).cumsum(0))


def _simulate_asg_batch(snn: SpikingNetwork, network: fx.GraphModule, x, y, reference_prediction,
                        tally, counter, report: Callable[[int], None]) -> _SampleReadout | None:
    """Layer after layer: every ASG layer integrates its whole window before it fires.

    Readout after t steps of the last window: terminal neurons report their first t steps.
    Everything before the terminal neurons is the same for every t, so the network runs once
    (full window, which also leaves every neuron with its counts for the statistics), and
    for each t only the terminal neurons and what depends on them run again, on the cached
    values of everything else.
    """
    window = snn.timesteps
    neurons = neurons_of(network)
    terminal = terminal_activations(snn.reference) & set(neurons)
    fed_by_terminal = modules_downstream_of(network, terminal)
    varying = nodes_downstream_of(network, terminal)
    snn.encoder.begin(x)
    mean_input = snn.encoder.window_mean(window)
    clamp_max = next(iter(neurons.values())).clamp_max
    counter.steps = 1
    counter.event_scale = {name: window / clamp_max for name in counter.fanouts}
    interpreter = fx.Interpreter(network, garbage_collect_values=False)
    interpreter.run(mean_input)
    full_window = counter.counted  # every layer once, in the order a forward counts them
    counter.counted = []
    cached = {node: value for node, value in interpreter.env.items()
              if node not in varying and node.op != "output"}
    outputs, sops, sample_sops = [], [], []
    try:
        for t in range(1, window + 1):
            for name in terminal:
                neurons[name].readout_step = t
            counter.event_scale = {name: (t if name in fed_by_terminal else window) / clamp_max
                                   for name in counter.fanouts}
            outputs.append(interpreter.run(mean_input, initial_env=dict(cached)))
            again = {count.layer: count for count in counter.counted}
            counter.counted = []
            total, samples = counter.add_up(
                [again.get(count.layer, count) if count.layer in fed_by_terminal else count
                 for count in full_window], 1, x.shape[0])
            sops.append(total)
            sample_sops.append(samples)
            report(t)
    finally:
        for name in terminal:
            neurons[name].readout_step = None
        counter.event_scale = None
    outputs = torch.stack(outputs)
    tally.add_readout(0, outputs, y, reference_prediction)
    tally.sops[:window] += torch.cat(sops).cpu().numpy()
    if any(isinstance(network.get_submodule(str(node.target)), MultiStep)
           for node in varying if node.op == "call_module"
           and str(node.target) not in terminal):
        # neurons after a terminal one: leave them with their full-window counts
        counter.recording = False
        try:
            interpreter.run(mean_input, initial_env=dict(cached))
        finally:
            counter.recording = True
    interpreter.env.clear()
    if not counter.per_sample:
        return None
    # the readout after t steps is already a mean per step: its margin is m(t)
    return _SampleReadout(prediction=outputs.argmax(-1), margin=output_margin(outputs),
                          sops=torch.cat(sample_sops))


def simulate(snn: SpikingNetwork, x: np.ndarray, y: np.ndarray, *, sample_shape: tuple[int, ...],
             batch_size: int, device: torch.device, memory_budget_mb: float,
             energy_profile: str = DEFAULT_PROFILE,
             progress: StepProgress | None = None,
             per_sample: SampleSink | None = None) -> MethodResult:
    """Run ``snn`` on the evaluation samples and summarise it as a MethodResult (energy on
    ``energy_profile``'s hardware, ``core.hardware``).  With ``per_sample``, each batch's
    ``BatchTrace`` goes to it as the batch finishes."""
    began = time.perf_counter()
    network = snn.network.to(device).eval()
    layout = _identity
    if snn.mode == "if":
        network = fuse_if_outputs(network)
        # not for ASG: its exactness to the CQ ANN needs the ANN's own convolution arithmetic
        if device.type == "cpu":
            network, layout = channels_last(network), as_channels_last
    reference = snn.reference.to(device).eval()
    reset_state(network)
    set_steps(network, 1)  # shape tracing below runs one sample through one step
    fanouts = synaptic_fanouts(network, _network_input_shape(snn, sample_shape))
    macs_layers = analog_layers(network) if snn.encoder.analog else set()
    analog_macs = sum(int(fanouts[name].sum()) for name in macs_layers if name in fanouts)
    counter = _SynapticCounter(network, fanouts, macs_layers, per_sample is not None)
    analog_energy = microjoules(energy_profile, macs=analog_macs)

    def energy_uj(sops):
        return analog_energy + microjoules(energy_profile, accumulates=sops)

    tally = _Tally(snn.timesteps)
    neurons = neurons_of(network)
    per_step = bytes_per_sample_step(reference, sample_shape)
    chunk = chunk_steps(snn.timesteps, batch_size, per_step, memory_budget_mb, device)
    total = len(x)
    completed: list[float] = []  # accuracy per t over the batches finished so far
    try:
        with torch.inference_mode():
            for first in range(0, total, batch_size):
                xb = torch.from_numpy(x[first:first + batch_size]).to(device)
                yb = torch.from_numpy(y[first:first + batch_size]).to(device)
                reference_logits, activations = _record_activations(reference, list(neurons), xb)
                reference_prediction = reference_logits.argmax(-1)
                tally.reference_correct += int(topk_correct(reference_logits, yb, 1))

                report = _BatchProgress(progress, first, len(xb), total, snn.timesteps,
                                        completed)
                if snn.mode == "asg":
                    readout = _simulate_asg_batch(snn, network, xb, yb, reference_prediction,
                                                  tally, counter, report)
                else:
                    readout = _simulate_if_batch(snn, network, xb, yb, reference_prediction,
                                                 tally, counter, chunk, report, layout)
                if readout is not None:
                    per_sample(readout.trace(y[first:first + batch_size], energy_uj))
                tally.samples += len(xb)
                _add_layer_stats(tally, neurons, activations, snn.timesteps)
                completed = tally.fractions(tally.top1)
    finally:
        counter.close()
        reset_state(network)
    sops = tally.fractions(tally.sops)
    return MethodResult(
        method=snn.method,
        top1=tally.fractions(tally.top1), top5=tally.fractions(tally.top5),
        agreement=tally.fractions(tally.agree), sops=sops,
        energy_uj=[energy_uj(s) for s in sops],
        latency=snn.latency, layers=_layer_reports(tally),
        reference_top1=tally.reference_correct / max(tally.samples, 1), parameters=snn.parameters,
        analog_input=snn.encoder.analog,
        seconds=time.perf_counter() - began,
    )


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _network_input_shape(snn: SpikingNetwork, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape one sample has after the encoder (ICE widens the channels)."""
    snn.encoder.begin(torch.zeros(1, *sample_shape, device=device_of(snn.reference)))
    return tuple(snn.encoder.steps(0, 1).shape[1:])

