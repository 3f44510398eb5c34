"""The IF update over a chunk of time steps, fused into one pass on the CPU.

Eager PyTorch needs three kernels per step (integrate, fire, reset), each a full pass over
the layer's membrane, so a chunk of T steps reads and writes the membrane about 10·T times;
the layer's time is memory traffic, not arithmetic.  The fused kernel (numba, parallel over
blocks of neurons) keeps a block's membrane in registers for all T steps, so it reads each
input current once and writes each output once.  Both paths do the same float32 operations
in the same order, so their spikes, membranes and counts are bit-identical
(``tests/core/test_if_kernel.py``).  The eager path serves CUDA, autograd, other dtypes and
machines without numba.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

try:
    import numba
    from numba import prange
except ImportError:  # the eager path serves; prange only names the parallel loop below
    numba = None
    prange = range

# neurons per parallel work item: large enough to vectorise and amortise scheduling, small
# enough that a block's membrane and counts stay in L1 while its T steps run
_BLOCK = 1024


def _jit(**options):
    """numba.njit, cached on disk where numba finds a writable cache directory."""
    def decorate(function):
        if numba is None:
            return function
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # no cache locator for this install: compile in memory only
            return numba.njit(**options)(function)
    return decorate


def integrate_and_fire(steps: torch.Tensor, membrane: torch.Tensor, spike_count: torch.Tensor,
                       threshold: torch.Tensor, amplitude: torch.Tensor,
                       subtract: bool) -> torch.Tensor:
    """Run T steps of IF dynamics; returns the output spikes ``[T, B, ...]`` (0 or a).

    ``steps``: input current ``[T, B, ...]`` (a stride-0 time dimension is a constant
    current); ``membrane`` and ``spike_count`` (``[B, ...]``) are updated in place;
    ``threshold`` and ``amplitude`` broadcast against one step.
    """
    kernel = _kernel("flat") if _fusable(steps, membrane, spike_count) else None
    if kernel is not None:
        return _fused(kernel, steps, membrane, spike_count, threshold, amplitude, subtract)
    return _eager(steps, membrane, spike_count, threshold, amplitude, subtract)


def integrate_fire_and_pool(steps: torch.Tensor, membrane: torch.Tensor,
                            spike_count: torch.Tensor, threshold: torch.Tensor,
                            amplitude: torch.Tensor, subtract: bool,
                            pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``integrate_and_fire``, then pool×pool average pooling with stride pool.

    Returns the pooled spikes ``[T, B, C, H/pool, W/pool]`` (the full-resolution spikes
    never reach memory) and, per step, the spike events the pooling received (summed over
    the batch, float64): the pooling's synaptic operations, since each input it covers
    drives exactly one output.
    """
    fusable = membrane.dim() == 4 and _fusable(steps, membrane, spike_count)
    if fusable and membrane.is_contiguous() and _kernel("pooled") is not None:
        return _fused_pooled(_kernel("pooled"), steps, membrane, spike_count, threshold,
                             amplitude, subtract, pool)
    if fusable and membrane.is_contiguous(memory_format=torch.channels_last) \
            and _kernel("pooled channels-last") is not None:
        return _fused_pooled_channels_last(_kernel("pooled channels-last"), steps, membrane,
                                           spike_count, threshold, amplitude, subtract, pool)
    spikes = _eager(steps, membrane, spike_count, threshold, amplitude, subtract)
    rows, columns = spikes.shape[-2] // pool, spikes.shape[-1] // pool
    events = torch.ne(spikes[..., :rows * pool, :columns * pool], 0).flatten(1).sum(1)
    pooled = torch.nn.functional.avg_pool2d(spikes.view(-1, *spikes.shape[2:]), pool)
    return pooled.view(*spikes.shape[:2], *pooled.shape[1:]), events.double()


def _eager(steps, membrane, spike_count, threshold, amplitude, subtract) -> torch.Tensor:
    # one spike buffer for the whole chunk; each step is three in-place kernels
    spikes = torch.empty(steps.shape, dtype=steps.dtype, device=steps.device)
    for t in range(steps.shape[0]):
        membrane.add_(steps[t])
        fired = torch.ge(membrane, threshold, out=spikes[t])
        if subtract:
            membrane.addcmul_(fired, threshold, value=-1.0)
        else:
            membrane.addcmul_(membrane, fired, value=-1.0)  # u − u·s: exactly 0 if s
    spike_count += spikes.sum(0)
    return spikes.mul_(amplitude)


def _fusable(steps: torch.Tensor, membrane: torch.Tensor, spike_count: torch.Tensor) -> bool:
    first = steps[0]
    return (steps.device.type == "cpu" and steps.dtype == torch.float32
            and membrane.dtype == torch.float32 and spike_count.dtype == torch.float32
            and not (torch.is_grad_enabled() and steps.requires_grad)
            and steps.stride(0) in (0, first.numel())
            and first.stride() == membrane.stride() == spike_count.stride()
            and _memory_order(first) is not None)


def _memory_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """The dimension order in which ``x`` is laid out densely (None if it is not dense)."""
    order = tuple(sorted(range(x.dim()), key=lambda d: -x.stride(d)))
    return order if x.permute(order).is_contiguous() else None


def _flat(x: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """A ``[..., N]`` view of ``x``'s trailing dims in memory order (no copy)."""
    lead = x.dim() - len(order)
    permuted = x.permute(*range(lead), *(lead + d for d in order))
    return permuted.reshape(*x.shape[:lead], -1)


def _use_torch_threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _fused(kernel, steps, membrane, spike_count, threshold, amplitude, subtract):
    first = steps[0]
    order = _memory_order(first)
    out = torch.empty_strided(steps.shape, (first.numel(), *first.stride()), dtype=first.dtype)
    current = _flat(steps[:1] if steps.stride(0) == 0 else steps, order)
    per_neuron = [_flat(torch.empty_like(first).copy_(v.expand(first.shape)), order)
                  for v in (threshold, amplitude)]
    _use_torch_threads()
    kernel(current.numpy(), _flat(membrane, order).numpy(), per_neuron[0].numpy(),
           per_neuron[1].numpy(), _flat(out, order).numpy(), _flat(spike_count, order).numpy(),
           steps.shape[0], subtract)
    return out


def _fused_pooled(kernel, steps, membrane, spike_count, threshold, amplitude, subtract, pool):
    count, batch, channels, height, width = steps.shape
    out = torch.empty(count, batch, channels, height // pool, width // pool)
    events = torch.empty(count, batch * channels)
    current = (steps[:1] if steps.stride(0) == 0 else steps).reshape(-1, batch * channels,
                                                                     height * width)
    per_channel = [v.reshape(-1).expand(channels).contiguous() if v.numel() == 1
                   else v.reshape(-1).contiguous() for v in (threshold, amplitude)]
    _use_torch_threads()
    kernel(current.numpy(), membrane.view(-1, height * width).numpy(), per_channel[0].numpy(),
           per_channel[1].numpy(), out.view(count, -1, *out.shape[3:]).numpy(),
           spike_count.view(-1, height * width).numpy(), events.numpy(), count, subtract,
           channels, width, pool)
    return out, events.double().sum(1)


def _fused_pooled_channels_last(kernel, steps, membrane, spike_count, threshold, amplitude,
                                subtract, pool):
    count, batch, channels, height, width = steps.shape
    out = torch.empty(count, batch, height // pool, width // pool, channels)
    events = torch.empty(count, batch)
    current = (steps[:1] if steps.stride(0) == 0 else steps).permute(0, 1, 3, 4, 2)
    per_channel = [v.reshape(-1).expand(channels).contiguous() for v in (threshold, amplitude)]
    _use_torch_threads()
    kernel(current.reshape(current.shape[0], batch, -1).numpy(),
           membrane.permute(0, 2, 3, 1).reshape(batch, -1).numpy(), per_channel[0].numpy(),
           per_channel[1].numpy(), out.view(count, batch, -1).numpy(),
           spike_count.permute(0, 2, 3, 1).reshape(batch, -1).numpy(), events.numpy(), count,
           subtract, width, pool)
    return out.permute(0, 1, 4, 2, 3), events.double().sum(1)


@functools.cache
def _kernel(kind: str):
    """The kernel of ``kind`` ("flat", "pooled", "pooled channels-last"), compiled on first
    use (seconds each, then loaded from numba's disk cache); None
    where numba is missing or cannot compile it (then the eager path serves)."""
    if numba is None:
        return None
    kernel, example = _SMOKE_TESTS[kind]()
    try:
        kernel(*example)
    except Exception:  # noqa: BLE001 - a broken numba/llvmlite must not stop a simulation
        return None
    return kernel


def warm_up() -> list[str]:
    """Compile (or load from numba's disk cache) every kernel now, so that a fresh worker's
    first simulation does not pay for it; returns the kinds that are ready."""
    return [kind for kind in _SMOKE_TESTS if _kernel(kind) is not None]


def _flat_example():
    one = np.ones(1, np.float32)
    return _if_steps, (one.reshape(1, 1), one * 0, one, one, np.empty((1, 1), np.float32),
                       one * 0, 1, True)


def _pooled_example():
    one, plane = np.ones(1, np.float32), np.ones((1, 1, 4), np.float32)
    return _if_pool_steps, (plane, plane[0] * 0, one, one, np.empty((1, 1, 1, 1), np.float32),
                            plane[0] * 0, np.empty((1, 1), np.float32), 1, True, 1, 2, 2)


def _pooled_channels_last_example():
    one, plane = np.ones(1, np.float32), np.ones((1, 1, 4), np.float32)
    return _if_pool_steps_channels_last, (
        plane, plane[0] * 0, one, one, np.empty((1, 1, 1), np.float32), plane[0] * 0,
        np.empty((1, 1), np.float32), 1, True, 2, 2)


# a call with the argument types real calls have, so the first compilation is the one used
_SMOKE_TESTS = {"flat": _flat_example, "pooled": _pooled_example,
                "pooled channels-last": _pooled_channels_last_example}


@_jit(parallel=True)
def _if_steps(current, membrane, threshold, amplitude, out, count, steps, subtract):
    """current: [T, N] or [1, N] (constant in time); out: [T, N]; the rest: [N]."""
    n = membrane.shape[0]
    constant = current.shape[0] == 1
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        lo, hi = block * _BLOCK, min(n, (block + 1) * _BLOCK)
        u, fired_so_far = membrane[lo:hi].copy(), count[lo:hi].copy()
        theta, spike = threshold[lo:hi], amplitude[lo:hi]
        for t in range(steps):
            _if_step(u, current[0 if constant else t, lo:hi], theta, spike, out[t, lo:hi],
                     fired_so_far, subtract)
        membrane[lo:hi] = u
        count[lo:hi] = fired_so_far


@_jit(parallel=True)
def _if_pool_steps(current, membrane, threshold, amplitude, out, count, events, steps,
                   subtract, channels, width, kernel):
    """IF, then kernel×kernel average pooling with stride kernel, one plane at a time.

    current: [T or 1, P, H·W] (P = B·C planes); membrane, count: [P, H·W];
    out: [T, P, H // kernel, W // kernel]; events: [T, P], the spikes the pooling covers;
    threshold, amplitude: [C].  The window sums run in the order ``avg_pool2d`` sums them
    (row-major, float32), then divide by kernel².
    """
    planes, neurons = membrane.shape
    rows, columns = out.shape[2], out.shape[3]
    constant = current.shape[0] == 1
    area = np.float32(kernel * kernel)
    for plane in prange(planes):
        theta = np.full(neurons, threshold[plane % channels], np.float32)
        spike = np.full(neurons, amplitude[plane % channels], np.float32)
        u, fired_so_far = membrane[plane].copy(), count[plane].copy()
        spikes = np.empty(neurons, np.float32)
        for t in range(steps):
            _if_step(u, current[0 if constant else t, plane], theta, spike, spikes,
                     fired_so_far, subtract)
            covered = 0  # an integer, so that the loops vectorise without reassociation
            for r in range(rows):
                for c in range(columns):
                    total = np.float32(0.0)
                    for dr in range(kernel):
                        for dc in range(kernel):
                            value = spikes[(r * kernel + dr) * width + c * kernel + dc]
                            total += value
                            covered += value != 0
                    out[t, plane, r, c] = total / area
            events[t, plane] = covered
        membrane[plane] = u
        count[plane] = fired_so_far


@_jit(parallel=True)
def _if_pool_steps_channels_last(current, membrane, threshold, amplitude, out, count, events,
                                 steps, subtract, width, kernel):
    """``_if_pool_steps`` for channels-last tensors, one sample at a time.

    current: [T or 1, B, H·W·C]; membrane, count: [B, H·W·C];
    out: [T, B, (H // kernel)·(W // kernel)·C]; events: [T, B]; threshold, amplitude: [C].
    """
    batch, neurons = membrane.shape
    channels = threshold.shape[0]
    columns = width // kernel
    rows = out.shape[2] // (columns * channels) if columns else 0
    constant = current.shape[0] == 1
    area = np.float32(kernel * kernel)
    theta = np.empty(neurons, np.float32)
    spike = np.empty(neurons, np.float32)
    for i in range(neurons):
        theta[i], spike[i] = threshold[i % channels], amplitude[i % channels]
    for sample in prange(batch):
        u, fired_so_far = membrane[sample].copy(), count[sample].copy()
        spikes = np.empty(neurons, np.float32)
        for t in range(steps):
            _if_step(u, current[0 if constant else t, sample], theta, spike, spikes,
                     fired_so_far, subtract)
            covered = 0  # an integer, so that the loops vectorise without reassociation
            for r in range(rows):
                for c in range(columns):
                    cell = (r * columns + c) * channels
                    for channel in range(channels):
                        out[t, sample, cell + channel] = 0.0
                    for dr in range(kernel):
                        for dc in range(kernel):
                            at = ((r * kernel + dr) * width + c * kernel + dc) * channels
                            for channel in range(channels):
                                value = spikes[at + channel]
                                out[t, sample, cell + channel] += value
                                covered += value != 0
                    for channel in range(channels):
                        out[t, sample, cell + channel] /= area
            events[t, sample] = covered
        membrane[sample] = u
        count[sample] = fired_so_far


@_jit(inline="always")
def _if_step(u, current, theta, spike, out, fired_so_far, subtract):
    """One step for a row of neurons, branch-free so that it vectorises.

    With s ∈ {0, 1}: u − s·θ and u − s·u are exactly the eager path's ``addcmul_`` results.
    """
    if subtract:
        for i in range(u.shape[0]):
            v = u[i] + current[i]
            fired = np.float32(v >= theta[i])
            out[i] = fired * spike[i]
            fired_so_far[i] += fired
            u[i] = v - fired * theta[i]
    else:
        for i in range(u.shape[0]):
            v = u[i] + current[i]
            fired = np.float32(v >= theta[i])
            out[i] = fired * spike[i]
            fired_so_far[i] += fired
            u[i] = v - fired * v
