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

from core.graph.layout import flat_in_memory_order, memory_order

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
    never reach memory) and, per step and sample, the spike events the pooling received
    (``[T, B]``, float64): the pooling's synaptic operations, since each input it covers
    drives exactly one output.  Per sample, so that early exit can cost each sample's own
    steps; they are integers, so any later sum over the batch is exact.
    """
    fusable = membrane.dim() == 4 and _fusable(steps, membrane, spike_count) \
        and _kernel("pooled") is not None
    if fusable and membrane.is_contiguous():
        return _fused_pooled(steps, membrane, spike_count, threshold, amplitude, subtract, pool,
                             channels_last=False)
    if fusable and membrane.is_contiguous(memory_format=torch.channels_last):
        return _fused_pooled(steps, membrane, spike_count, threshold, amplitude, subtract, pool,
                             channels_last=True)
    spikes = _eager(steps, membrane, spike_count, threshold, amplitude, subtract)
    rows, columns = spikes.shape[-2] // pool, spikes.shape[-1] // pool
    events = torch.ne(spikes[..., :rows * pool, :columns * pool], 0).flatten(2).sum(2)
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
            and memory_order(first) is not None)


def _use_torch_threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _fused(kernel, steps, membrane, spike_count, threshold, amplitude, subtract):
    first = steps[0]
    order = memory_order(first)
    out = torch.empty_strided(steps.shape, (first.numel(), *first.stride()), dtype=first.dtype)
    def flat(x: torch.Tensor):
        return flat_in_memory_order(x, order).numpy()

    current = steps[:1] if steps.stride(0) == 0 else steps
    per_neuron = [flat(torch.empty_like(first).copy_(v.expand(first.shape)))
                  for v in (threshold, amplitude)]
    _use_torch_threads()
    kernel(flat(current), flat(membrane), per_neuron[0], per_neuron[1], flat(out),
           flat(spike_count), steps.shape[0], subtract)
    return out


def _fused_pooled(steps, membrane, spike_count, threshold, amplitude, subtract, pool,
                  channels_last: bool):
    """The pooled kernel on items of ``[H, W, C']``: each sample (C' = C) when channels-last,
    each plane (C' = 1, its channel's θ and a) when NCHW."""
    count, batch, channels, height, width = steps.shape
    rows, columns = height // pool, width // pool
    current = steps[:1] if steps.stride(0) == 0 else steps
    per_channel = [v.reshape(-1).expand(channels).contiguous() for v in (threshold, amplitude)]
    if channels_last:
        out = torch.empty(count, batch, rows, columns, channels)
        items = batch
        current, membrane, spike_count = (x.movedim(-3, -1) for x in
                                          (current, membrane, spike_count))
        per_channel = [v.view(1, channels) for v in per_channel]
    else:
        out = torch.empty(count, batch, channels, rows, columns)
        items = batch * channels
        per_channel = [v.view(channels, 1) for v in per_channel]
    events = torch.empty(count, items)
    _use_torch_threads()
    _kernel("pooled")(current.reshape(current.shape[0], items, -1).numpy(),
                      membrane.reshape(items, -1).numpy(), per_channel[0].numpy(),
                      per_channel[1].numpy(), out.view(count, items, -1).numpy(),
                      spike_count.reshape(items, -1).numpy(), events.numpy(), count,
                      subtract, width, pool)
    per_sample = events.view(count, batch, -1).double().sum(2)  # NCHW: the planes of a sample
    return (out.permute(0, 1, 4, 2, 3) if channels_last else out), per_sample


@functools.cache
def _kernel(kind: str):
    """The kernel of ``kind`` ("flat", "pooled"), compiled on first
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
    one, plane = np.ones((1, 1), np.float32), np.ones((1, 1, 4), np.float32)
    return _if_pool_steps, (plane, plane[0] * 0, one, one, np.empty((1, 1, 1), np.float32),
                            plane[0] * 0, np.empty((1, 1), np.float32), 1, True, 2, 2)


# a call with the argument types real calls have, so the first compilation is the one used
_SMOKE_TESTS = {"flat": _flat_example, "pooled": _pooled_example}


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
                   subtract, width, kernel):
    """IF, then kernel×kernel average pooling with stride kernel, one item at a time.

    An item is an ``[H, W, C]`` block, channels innermost: a channels-last sample, or an
    NCHW plane with C = 1.  current: [T or 1, M, H·W·C] (M items); membrane, count:
    [M, H·W·C]; out: [T, M, (H // kernel)·(W // kernel)·C]; events: [T, M], the spikes the
    pooling covers; threshold, amplitude: [R, C], item m using row m mod R.

    The IF step runs over the whole item in memory order (long loops, which vectorise) and
    writes 0/1; the pooling then counts each window's spikes, n, exactly.  A window holds
    one channel, so its values are n copies of that channel's amplitude a and zeros, and
    avg_pool2d's float32 sum of them in any order is the chain a + a + … (n times); the
    kernel looks that sum up and divides by kernel² as avg_pool2d does.
    """
    items, neurons = membrane.shape
    patterns, channels = threshold.shape
    row_length = width * channels
    rows, columns = neurons // row_length // kernel, width // kernel
    constant = current.shape[0] == 1
    area = np.float32(kernel * kernel)
    # built once, outside the parallel loop (an integer modulo per neuron per item costs as
    # much as the whole step)
    thetas = np.empty((patterns, neurons), np.float32)
    window_sums = np.empty((patterns, kernel * kernel + 1, channels), np.float32)
    for pattern in range(patterns):
        for start in range(0, neurons, channels):
            thetas[pattern, start:start + channels] = threshold[pattern]
        window_sums[pattern] = _window_sums(amplitude[pattern], kernel * kernel)
    quarters = amplitude / np.float32(4.0)
    ones = np.ones(neurons, np.float32)
    covered_length = columns * kernel * channels
    for item in prange(items):
        pattern = item % patterns
        u, fired_so_far = membrane[item].copy(), count[item].copy()
        fired = np.empty(neurons, np.float32)
        column_counts = np.empty(row_length, np.float32)
        for t in range(steps):
            _if_step(u, current[0 if constant else t, item], thetas[pattern], ones, fired,
                     fired_so_far, subtract)
            covered = 0
            for r in range(rows):
                pooled = out[t, item, r * columns * channels:(r + 1) * columns * channels]
                for dr in range(kernel):
                    band = fired[(r * kernel + dr) * row_length:]
                    for i in range(covered_length):
                        covered += band[i] != 0
                    if dr == 0:
                        for i in range(row_length):
                            column_counts[i] = band[i]
                    else:
                        for i in range(row_length):
                            column_counts[i] += band[i]
                _pool_row(column_counts, pooled, window_sums[pattern], quarters[pattern], kernel,
                          area)
            events[t, item] = covered
        membrane[item] = u
        count[item] = fired_so_far


@_jit(inline="always")
def _pool_row(column_counts, out, window_sums, quarters, kernel, area):
    """One output row from its windows' spike counts per input column (``column_counts``,
    [W·C]); ``out``: [(W // kernel)·C].  For 2×2 windows, a + a + … (n times) is exactly
    n·a (n ≤ 4), so the output is n·(a/4) without the table."""
    channels = window_sums.shape[1]
    columns = out.shape[0] // channels
    if kernel == 2:
        for c in range(columns):
            at, cell = 2 * c * channels, c * channels
            for channel in range(channels):
                n = column_counts[at + channel] + column_counts[at + channels + channel]
                out[cell + channel] = n * quarters[channel]
        return
    for c in range(columns):
        at, cell = c * kernel * channels, c * channels
        for channel in range(channels):
            n = column_counts[at + channel]
            for dc in range(1, kernel):
                n += column_counts[at + dc * channels + channel]
            out[cell + channel] = window_sums[int(n), channel] / area


@_jit(inline="always")
def _window_sums(amplitude, size):
    """[n, c]: n copies of amplitude[c] added one by one in float32, n = 0 … size."""
    sums = np.empty((size + 1, amplitude.shape[0]), np.float32)
    for channel in range(amplitude.shape[0]):
        total = np.float32(0.0)
        sums[0, channel] = total
        for n in range(1, size + 1):
            total += amplitude[channel]
            sums[n, channel] = total
    return sums


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
