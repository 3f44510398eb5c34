"""Spiking neurons in multi-step form: a call processes ``steps`` time steps at once.

Tensors arrive with time folded into the batch dimension, ``[steps·B, ...]`` (step-major),
so the stateless layers between neurons run on all steps of a chunk in one call.  State is
explicit: ``reset()`` clears it, and it persists across calls so a long window can be
simulated in chunks.  Every stateful module derives from ``MultiStep``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from core.graph.modules import cq_window
from core.if_kernel import integrate_and_fire, integrate_fire_and_pool

ResetMode = Literal["subtract", "zero"]


def channel_sums(values: torch.Tensor) -> torch.Tensor:
    """``values`` [B, C, ...] summed per channel over the batch and positions: [C]."""
    return values.transpose(0, 1).reshape(values.shape[1], -1).sum(1)


def per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-channel [C] tensor against ``like`` of shape [B, C, ...]."""
    if values.numel() == 1:
        return values.reshape(())
    return values.view((1, -1) + (1,) * (like.dim() - 2))


class MultiStep(nn.Module):
    """Base of every stateful module: the IF and ASG neurons and the spiking max pool.

    One call covers many time steps: ``steps`` of them folded into the batch (IF, pool; see
    ``set_steps``) or the whole window as its mean current (ASG).  As in SpikingJelly's
    ``MemoryModule``, a subclass names its state in ``state_names``; ``reset()`` clears all
    of it (``reset_state`` does so for a whole network), and otherwise it persists across
    calls.  ``kind`` is the neuron kind a report names ("if", "asg"); None for a stateful
    module that is not a neuron.
    """

    state_names: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str | None] = None

    def __init__(self):
        super().__init__()
        self.steps = 1
        self.batch: int | None = None
        self.reset()

    def reset(self) -> None:
        for name in self.state_names:
            setattr(self, name, None)

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """[steps·B, ...] → [steps, B, ...]; a [B, ...] input is a current constant in time."""
        if self.batch is not None and x.shape[0] == self.batch and self.steps > 1:
            return x.unsqueeze(0).expand(self.steps, *x.shape)
        return x.view(self.steps, x.shape[0] // self.steps, *x.shape[1:])


class IFNeuron(MultiStep):
    """Integrate-and-fire neuron without leak.

        u[t] = u[t-1] + I[t]
        s[t] = 1 if u[t] ≥ θ else 0
        u[t] ← u[t] − s[t]·θ   (reset by subtraction)   or   u[t] ← 0 if s[t]   (reset to zero)
        o[t] = s[t]·a          (a: spike amplitude, θ unless given)
        u[0] = f·θ + Δu        (f = 0, or ½ for the half-threshold start; Δu per channel,
                                0 unless post-conversion calibration set it)

    θ and a are a scalar (per layer) or a vector with one entry per channel.  Over T steps
    the mean output (1/T)·Σ o[t] approximates clamp(I, 0, θ)·a/θ; negative membrane is kept.
    ``spike_count`` holds each neuron's count since the last reset.
    """

    state_names = ("membrane", "spike_count")
    kind = "if"
    membrane: torch.Tensor | None
    spike_count: torch.Tensor | None

    def __init__(self, threshold: torch.Tensor | float,
                 amplitude: torch.Tensor | float | None = None,
                 reset: ResetMode = "subtract", initial_fraction: float = 0.0):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        amplitude = threshold if amplitude is None else \
            torch.as_tensor(amplitude, dtype=torch.float32).reshape(-1)
        self.register_buffer("threshold", threshold.clone())
        self.register_buffer("amplitude", amplitude.clone())
        self.register_buffer("initial_offset", torch.zeros(1))
        self.reset_mode = reset
        self.initial_fraction = float(initial_fraction)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        steps, theta, amplitude = self._begin(current)
        out = integrate_and_fire(steps, self.membrane, self.spike_count, theta, amplitude,
                                 self.reset_mode == "subtract")
        return out.view(-1, *out.shape[2:])

    def _begin(self, current: torch.Tensor):
        """The current as [steps, B, ...], θ and a broadcast to it; state created if new."""
        steps = self._unfold(current)
        first = steps[0]
        theta = per_channel(self.threshold, first)
        if self.membrane is None:
            self.membrane = (torch.zeros_like(first) + self.initial_fraction * theta
                             + per_channel(self.initial_offset, first))
            self.spike_count = torch.zeros_like(first)
        return steps, theta, per_channel(self.amplitude, first)

    def extra_repr(self) -> str:
        return (f"channels={self.threshold.numel()}, reset={self.reset_mode}, "
                f"initial_fraction={self.initial_fraction}")


class FusedIFNeuron(IFNeuron):
    """An IF neuron with the scalar factors and the k×k average pooling (stride k) that
    follow it in the graph, as one module:

        y[t] = (1/k²) · Σ_{(i, j) ∈ window} c·o[t]_{i, j}     (without pooling: y[t] = c·o[t])

    with o[t] the IF neuron's output and c the product of the factors, folded into the
    spike amplitude (``output_amplitude`` = a·c, rounded as the graph's multiplications
    round it).  The simulator builds it (``core.graph.fusion``) so that the full-resolution
    spikes never reach memory.  ``amplitude``, state and ``spike_count`` stay those of the
    neuron it replaces, so its statistics are the same.  With pooling, ``events`` holds
    after each call, per step and sample (``[steps, B]``), the spikes the pooling received:
    its synaptic operations, since each covered input drives one output.
    """

    state_names = ("membrane", "spike_count", "events")
    events: torch.Tensor | None

    def __init__(self, neuron: IFNeuron, output_amplitude: torch.Tensor, pool: int | None):
        super().__init__(neuron.threshold, neuron.amplitude, neuron.reset_mode,
                         neuron.initial_fraction)
        self.initial_offset = neuron.initial_offset.clone()
        self.register_buffer("output_amplitude", output_amplitude.clone())
        self.pool = pool

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        steps, theta, _ = self._begin(current)
        amplitude = per_channel(self.output_amplitude, steps[0])
        subtract = self.reset_mode == "subtract"
        if self.pool is None:
            out = integrate_and_fire(steps, self.membrane, self.spike_count, theta, amplitude,
                                     subtract)
        else:
            out, self.events = integrate_fire_and_pool(
                steps, self.membrane, self.spike_count, theta, amplitude, subtract, self.pool)
        return out.view(-1, *out.shape[2:])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool}"


class ASGNeuron(MultiStep):
    """Accumulate-then-spike (Yan, Zhou & Wong): integrate the whole window, then fire.

    It sees the window-mean input current c̄ = (1/T)·Σ_t I[t] and drives an IF neuron
    (threshold θ = m, reset by subtraction, u0 = 0) with the constant c̄ for T steps, so its
    spike count is n = clamp(floor(c̄·T/θ), 0, T) = floor(clamp(c̄, 0, m)·L) with L = T/m.
    The count is computed in integer levels exactly as the CQ activation computes it, so no
    θ = m − ε guard is needed.  The output is the window-mean spike current n·θ/T = n/L.
    With ``readout_step`` = t < T it returns the mean spike current of the first t steps
    instead, which is what a downstream non-spiking readout has seen by then.
    The simulator supplies c̄ directly: the layers between neurons are affine, so feeding
    them the previous layer's window-mean output gives the exact window-mean current.
    """

    state_names = ("spike_count", "drive")
    kind = "asg"
    spike_count: torch.Tensor | None
    drive: torch.Tensor | None

    def __init__(self, clamp_max: float, levels: int):
        super().__init__()
        self.clamp_max = float(clamp_max)
        self.levels = int(levels)
        self.readout_step: int | None = None

    @property
    def window(self) -> int:
        return cq_window(self.clamp_max, self.levels)

    @property
    def threshold(self) -> torch.Tensor:
        """θ = m, as the one-entry tensor an IF neuron's per-layer threshold is."""
        return torch.tensor([self.clamp_max])

    @property
    def amplitude(self) -> torch.Tensor:
        """Each spike carries θ = m."""
        return self.threshold

    def forward(self, mean_current: torch.Tensor) -> torch.Tensor:
        levels = torch.floor(torch.clamp(mean_current, 0.0, self.clamp_max) * self.levels)
        self.drive = mean_current
        self.spike_count = levels
        step = self.readout_step
        if step is None or step >= self.window:
            return levels / self.levels
        # read out after `step` steps of the window: the mean current of the spikes so far
        return self.spike_counts_until(step) * (self.clamp_max / step)

    def spike_counts_until(self, t: int) -> torch.Tensor:
        """Cumulative spikes after t steps of constant drive: min(floor(t·c̄·L/T), n)."""
        if t >= self.window:
            return self.spike_count
        rate = torch.clamp(self.drive, 0.0, self.clamp_max) * self.levels / self.window
        return torch.minimum(torch.floor(rate * t), self.spike_count)


class SpikeMaxPool(MultiStep):
    """Max pooling for spike trains, gated by accumulated input.

        A[t] = A[t-1] + x[t];   j*(t) = argmax_{j ∈ window} A[t]_j;   y[t] = x[t]_{j*(t)}

    Each window passes on the spikes of the input that has been most active so far, so the
    output rate tends to the maximum input rate (the ANN's max pooling of rates) without
    ever emitting more than one input's spikes.
    """

    state_names = ("accumulated",)
    accumulated: torch.Tensor | None

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.kernel_size = pool.kernel_size
        self.stride = pool.stride
        self.padding = pool.padding
        self.dilation = pool.dilation
        self.ceil_mode = pool.ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self._unfold(x)
        if self.accumulated is None:
            self.accumulated = torch.zeros_like(steps[0])
        # the running sums step by step (in place, into one buffer), then the pooling and
        # the gather over all steps of the chunk in one call each
        accumulated = torch.empty(steps.shape, dtype=steps.dtype, device=steps.device)
        running = self.accumulated
        for t in range(steps.shape[0]):
            running = torch.add(running, steps[t], out=accumulated[t])
        self.accumulated = running.clone()
        rows = steps.shape[0] * steps.shape[1]
        _, index = nn.functional.max_pool2d(
            accumulated.view(rows, *steps.shape[2:]), self.kernel_size, self.stride,
            self.padding, self.dilation, ceil_mode=self.ceil_mode, return_indices=True)
        flat = steps.reshape(rows, steps.shape[2], -1)
        return flat.gather(2, index.flatten(2)).view_as(index)


def is_neuron(module: nn.Module | None) -> bool:
    """Whether ``module`` is a spiking neuron (IF or ASG), not merely stateful."""
    return isinstance(module, MultiStep) and module.kind is not None


def neurons_of(network: nn.Module) -> dict[str, MultiStep]:
    """The spiking neurons of a network, by module name."""
    return {name: m for name, m in network.named_modules() if is_neuron(m)}


def reset_state(network: nn.Module) -> None:
    """Clear the state of every stateful module (neurons, spiking pools) in a network."""
    for module in network.modules():
        if isinstance(module, MultiStep):
            module.reset()


def set_steps(network: nn.Module, steps: int, batch: int | None = None) -> None:
    """Tell every multi-step module how many time steps the next call carries.

    With ``batch`` given, a tensor of ``batch`` rows reaching a module is taken as constant
    over the steps (the analog input's layers are then computed once, not once per step).
    """
    for module in network.modules():
        if isinstance(module, MultiStep):
            module.steps = steps
            module.batch = batch
