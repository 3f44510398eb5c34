"""Input encoders: turn a batch of images into the SNN's input for time steps [t0, t1).

Every encoder returns a tensor of shape ``[(t1-t0)·B, ...]`` (step-major), the layout the
multi-step neurons expect.  ``analog`` says whether the first layer receives real-valued
currents (its operations are then multiply-accumulates, not accumulates).
"""

from __future__ import annotations

import torch


class InputEncoder:
    analog = False

    def begin(self, x: torch.Tensor) -> None:
        """Start a new batch; ``x`` holds one sample per row."""
        self.x = x

    def steps(self, t0: int, t1: int) -> torch.Tensor:
        raise NotImplementedError

    def window_mean(self, window: int) -> torch.Tensor:
        """The input averaged over a whole window of ``window`` steps."""
        return self.steps(0, window).view(window, *self.x.shape).mean(0)


class DirectEncoder(InputEncoder):
    """The analog input as a constant current at every step: I[t] = x."""

    analog = True

    def steps(self, t0: int, t1: int) -> torch.Tensor:
        return self.x.unsqueeze(0).expand(t1 - t0, *self.x.shape).reshape(-1, *self.x.shape[1:])

    def window_mean(self, window: int) -> torch.Tensor:
        return self.x


def evenly_spread(counts: torch.Tensor, window: int, t0: int, t1: int) -> torch.Tensor:
    """Spikes of an IF encoder emitting ``counts`` spikes evenly over ``window`` steps.

    s[t] = floor(n·t/T) − floor(n·(t−1)/T), computed in integers so the total is exactly n.
    """
    counts = counts.to(torch.int64)
    times = torch.arange(t0, t1 + 1, device=counts.device).view(-1, *([1] * counts.dim()))
    cumulative = torch.div(counts.unsqueeze(0) * times, window, rounding_mode="floor")
    return (cumulative[1:] - cumulative[:-1]).to(torch.float32)


class RateEncoder(InputEncoder):
    """Deterministic rate code of x ∈ [0, 1]: an IF encoder with threshold 1 and u0 = 0.

    s[t] = floor(x·t) − floor(x·(t−1)), so after t steps it has emitted floor(x·t) spikes.
    """

    def steps(self, t0: int, t1: int) -> torch.Tensor:
        x = self.x.clamp(0.0, 1.0)
        times = torch.arange(t0, t1 + 1, device=x.device, dtype=x.dtype)
        cumulative = torch.floor(x.unsqueeze(0) * times.view(-1, *([1] * x.dim())))
        return (cumulative[1:] - cumulative[:-1]).reshape(-1, *x.shape[1:])


class PoissonEncoder(InputEncoder):
    """Stochastic rate code: s[t] ~ Bernoulli(x), seeded so a job is reproducible."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def steps(self, t0: int, t1: int) -> torch.Tensor:
        x = self.x.clamp(0.0, 1.0)
        noise = torch.rand((t1 - t0, *x.shape), generator=self.generator).to(x.device)
        return (noise < x.unsqueeze(0)).to(x.dtype).reshape(-1, *x.shape[1:])


class CountEncoder(InputEncoder):
    """VR / ICE input: integer spike counts from a coding module, spread evenly (paper §VR).

    ``coding.spike_counts(x)`` gives n ∈ {0..T} per (expanded) input element; each spike carries
    ``amplitude`` (m), so the window-mean input is n·m/T = n/L, the CQ network's input value.
    """

    def __init__(self, coding, amplitude: float):
        self.coding = coding
        self.amplitude = float(amplitude)

    def begin(self, x: torch.Tensor) -> None:
        self.counts = self.coding.spike_counts(x)

    def steps(self, t0: int, t1: int) -> torch.Tensor:
        spikes = evenly_spread(self.counts, self.coding.window, t0, t1) * self.amplitude
        return spikes.reshape(-1, *self.counts.shape[1:])

    def window_mean(self, window: int) -> torch.Tensor:
        """n/L exactly as the VR/ICE module computes it (n·m/T in exact arithmetic)."""
        return self.counts.to(torch.float32) / self.coding.levels


def make_encoder(kind: str, seed: int) -> InputEncoder:
    """The encoder for the classic methods' ``input_encoding`` option."""
    if kind == "direct":
        return DirectEncoder()
    if kind == "rate":
        return RateEncoder()
    if kind == "poisson":
        return PoissonEncoder(seed)
    raise ValueError(f"unknown input encoding {kind!r}")
