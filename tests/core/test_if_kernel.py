"""The fused IF kernels against spike trains computed by hand and against the eager path.

The eager path (three in-place PyTorch kernels per step, then ``avg_pool2d``) is the oracle:
both do the same float32 operations in the same order, so every comparison is an equality.
The fusion pass is checked on a converted convolutional network: same outputs, same
simulation report, and the original network untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import fx, nn

from core import if_kernel
from core.encoders import DirectEncoder
from core.graph.fusion import fuse_if_outputs
from core.neurons import FusedIFNeuron, IFNeuron, neurons_of, reset_state, set_steps
from core.report import Latency
from core.simulate import simulate
from core.snn import SpikingNetwork

PATHS = ("fused", "eager")


FUSED_ENTRIES = ("_fused", "_fused_pooled")


def _count_fused_calls(monkeypatch) -> list[str]:
    """Record every call of a compiled kernel's entry point (so a test knows it ran)."""
    calls: list[str] = []
    for name in FUSED_ENTRIES:
        entry = getattr(if_kernel, name)
        monkeypatch.setattr(if_kernel, name, lambda *a, _entry=entry, _name=name, **k: (
            calls.append(_name), _entry(*a, **k))[1])
    return calls


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "eager":
        monkeypatch.setattr(if_kernel, "_kernel", lambda kind: None)
        yield request.param
        return
    for kind in ("flat", "pooled"):
        assert if_kernel._kernel(kind) is not None, f"numba is a dependency: {kind} failed"
    calls = _count_fused_calls(monkeypatch)
    yield request.param
    assert calls, "the fused path was asked for, but no compiled kernel ran"


def _run(neuron: IFNeuron, currents: torch.Tensor, steps: int) -> torch.Tensor:
    neuron.steps = steps
    with torch.inference_mode():
        return neuron(currents)


def test_spike_train_by_hand(path):
    # θ = 1, I = 0.75 each step, reset by subtraction: u = .75, 1.5→.5 (spike), 1.25→.25
    # (spike), 1.0→0 (spike): spikes 0 1 1 1, count 3, membrane 0
    neuron = IFNeuron(1.0, amplitude=2.0)
    out = _run(neuron, torch.full((4, 1), 0.75), 4)
    assert out.flatten().tolist() == [0.0, 2.0, 2.0, 2.0]  # each spike carries a = 2
    assert neuron.spike_count.item() == 3 and neuron.membrane.item() == 0.0


def test_reset_to_zero_and_half_threshold_start_by_hand(path):
    # θ = 1, u0 = 0.5, I = 0.25: u = .75, 1.0 → spike, reset to 0, .25, .5, .75, 1.0 → spike
    neuron = IFNeuron(1.0, reset="zero", initial_fraction=0.5)
    out = _run(neuron, torch.full((6, 1), 0.25), 6)
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert neuron.membrane.item() == 0.0


def test_pooled_neuron_by_hand(path):
    # a 2×2 plane with currents .5, 1, .25, 0 into θ = 1: after 2 steps the four neurons hold
    # 1 spike (t=2), 2 spikes (t=1, 2), 0, 0, so the pooled outputs are (0+1+0+0)/4, (1+1)/4
    neuron = FusedIFNeuron(IFNeuron(1.0), torch.tensor([1.0]), 2)
    currents = torch.tensor([0.5, 1.0, 0.25, 0.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    out = _run(neuron, currents, 2)
    assert out.shape == (2, 1, 1, 1)
    assert out.flatten().tolist() == [0.25, 0.5]
    assert neuron.spike_count.flatten().tolist() == [1.0, 2.0, 0.0, 0.0]
    assert neuron.events.tolist() == [[1.0], [2.0]]  # spikes the pooling received per step


def _layer(shape, per_channel: bool, reset: str, fraction: float) -> IFNeuron:
    generator = torch.Generator().manual_seed(1)
    threshold = torch.rand(shape[1], generator=generator) + 0.25 if per_channel else 0.6
    amplitude = torch.rand(shape[1], generator=generator) + 0.5 if per_channel else None
    return IFNeuron(threshold, amplitude, reset=reset, initial_fraction=fraction)


def _eager_and_fused(monkeypatch, make, call):
    """``call(make())`` on the fused path and on the eager path: (fused, eager) results."""
    with monkeypatch.context() as patch:
        calls = _count_fused_calls(patch)
        fused = call(make())
        assert calls, "the fused side took the eager path"
    with monkeypatch.context() as patch:
        patch.setattr(if_kernel, "_kernel", lambda kind: None)
        eager = call(make())
    return fused, eager


CASES = [((3, 4, 5, 6), True, "subtract", 0.0), ((3, 4, 5, 6), False, "zero", 0.5),
         ((2, 7), True, "subtract", 0.5), ((2, 3, 9), False, "subtract", 0.0)]


@pytest.mark.parametrize("shape, per_channel, reset, fraction", CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "constant"])
def test_fused_equals_eager_bit_for_bit(monkeypatch, shape, per_channel, reset, fraction, layout):
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("channels-last is a 4-D layout")
    steps, chunks = 5, 3
    generator = torch.Generator().manual_seed(2)
    if layout == "constant":
        currents = [torch.randn(shape, generator=generator) for _ in range(chunks)]
    else:
        currents = [torch.randn((steps * shape[0], *shape[1:]), generator=generator)
                    for _ in range(chunks)]
    if layout == "channels_last":
        currents = [c.contiguous(memory_format=torch.channels_last) for c in currents]

    def call(neuron):
        outs = []
        for chunk in currents:  # state carries over between chunks
            neuron.steps, neuron.batch = steps, shape[0] if layout == "constant" else None
            with torch.inference_mode():
                outs.append(neuron(chunk))
        return outs, neuron.membrane, neuron.spike_count

    fused, eager = _eager_and_fused(
        monkeypatch, lambda: _layer(shape, per_channel, reset, fraction), call)
    assert all(torch.equal(a, b) for a, b in zip(fused[0], eager[0], strict=True))
    assert torch.equal(fused[1], eager[1]) and torch.equal(fused[2], eager[2])
    assert fused[2].sum() > 0  # the inputs do make the neurons fire


@pytest.mark.parametrize("height, width, kernel", [(6, 8, 2), (7, 5, 2), (9, 9, 3), (8, 12, 4)])
@pytest.mark.parametrize("constant", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pooled_neuron_equals_neuron_then_avg_pool(path, height, width, kernel, constant,
                                                   channels_last):
    batch, channels, steps = 3, 4, 6
    generator = torch.Generator().manual_seed(3)
    shape = (batch, channels, height, width)
    current = torch.randn(shape if constant else (steps * batch, *shape[1:]),
                          generator=generator)
    if channels_last:
        current = current.contiguous(memory_format=torch.channels_last)
    plain, pooled = (_layer(shape, True, "subtract", 0.5) for _ in range(2))
    pooled = FusedIFNeuron(pooled, pooled.amplitude, kernel)
    for neuron in (plain, pooled):
        neuron.steps, neuron.batch = steps, batch if constant else None
    with torch.inference_mode():
        spikes = plain(current)
        expected = nn.functional.avg_pool2d(spikes, kernel)
        got = pooled(current)
    assert torch.equal(got, expected)
    covered = spikes[..., :height // kernel * kernel, :width // kernel * kernel]
    per_sample = (covered != 0).reshape(steps, batch, -1).sum(2).double()
    assert pooled.events.tolist() == per_sample.tolist()  # [steps, B]
    assert torch.equal(pooled.spike_count, plain.spike_count)
    assert torch.equal(pooled.membrane, plain.membrane)


def test_autograd_takes_the_eager_path():
    neuron = IFNeuron(0.5)
    current = torch.randn(4, 3, requires_grad=True)
    neuron.steps = 2
    assert not if_kernel._fusable(current.view(2, 2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    assert neuron(current).shape == (4, 3)


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(3, stride=1)  # overlapping: not fusable
        self.act3 = nn.ReLU()
        self.pool3 = nn.AvgPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        x = self.pool1(0.5 * (self.act1(self.conv1(x)) * 1.7))  # factors fold into a
        x = self.pool2(self.act2(self.conv2(x)) * 0.75)  # a factor, then no fusable pool
        y = self.act3(x)
        return self.head(torch.flatten(self.pool3(y), 1) + torch.flatten(self.pool3(y), 1))


def _spiking_conv_net() -> SpikingNetwork:
    torch.manual_seed(4)
    reference = fx.symbolic_trace(_ConvNet()).eval()
    network = fx.symbolic_trace(_ConvNet())
    for name, threshold in (("act1", 0.4), ("act2", torch.rand(4) + 0.2), ("act3", 0.3)):
        network.add_submodule(name, IFNeuron(threshold, initial_fraction=0.5))
    network.load_state_dict(reference.state_dict(), strict=False)
    return SpikingNetwork(method="test", network=network.eval(), reference=reference,
                          encoder=DirectEncoder(), timesteps=12,
                          latency=Latency(window=12, end_to_end_steps=12, anytime=True))


def test_fusion_pass_fuses_factors_and_non_overlapping_pools_and_keeps_the_original():
    snn = _spiking_conv_net()
    fused = fuse_if_outputs(snn.network)
    kinds = {name: type(m).__name__ for name, m in fused.named_children()}
    assert kinds["act1"] == "FusedIFNeuron" and "pool1" not in kinds
    assert fused.act1.pool == 2 and "mul" not in fused.code
    assert torch.equal(fused.act1.output_amplitude, snn.network.act1.amplitude * 1.7 * 0.5)
    assert torch.equal(fused.act1.amplitude, snn.network.act1.amplitude)  # for the statistics
    # its factor is folded, its pooling (stride 1) is not fusable and stays a layer
    assert kinds["act2"] == "FusedIFNeuron" and fused.act2.pool is None
    assert kinds["pool2"] == "AvgPool2d"
    assert kinds["act3"] == "IFNeuron"  # its pooling is called twice, so it has two users
    assert type(snn.network.act1) is IFNeuron and hasattr(snn.network, "pool1")
    assert fused.conv1 is snn.network.conv1  # the other layers are shared, not copied
    x = torch.randn(5, 2, 12, 12)
    outs = []
    for network in (snn.network, fused):
        reset_state(network)
        set_steps(network, 4)
        with torch.inference_mode():
            outs.append(network(x.repeat(4, 1, 1, 1)))
    assert torch.equal(outs[0], outs[1])
    assert set(neurons_of(fused)) == set(neurons_of(snn.network))


def test_simulation_report_is_the_same_with_and_without_fusion(monkeypatch):
    snn = _spiking_conv_net()
    x = torch.randn(20, 2, 12, 12).numpy()
    y = np.arange(20) % 3

    def run(_):
        return simulate(snn, x, y, sample_shape=(2, 12, 12), batch_size=8,
                        device=torch.device("cpu"), memory_budget_mb=1.0)

    fused = run(None)
    with monkeypatch.context() as patch:
        patch.setattr("core.simulate.fuse_if_outputs", lambda network: network)
        patch.setattr(if_kernel, "_kernel", lambda kind: None)
        eager = run(None)
    for field in ("top1", "top5", "agreement", "sops", "energy_uj", "layers"):
        assert getattr(fused, field) == getattr(eager, field), field
    assert max(fused.sops) > 0


def test_warm_up_readies_every_kernel_and_says_when_none_compiles(monkeypatch):
    from core import pipeline

    assert pipeline.warm_up() == ["flat", "pooled"]
    monkeypatch.setattr(if_kernel, "_kernel", lambda kind: None)  # numba missing or broken
    assert pipeline.warm_up() == []  # the worker logs "none, eager neurons" and goes on
