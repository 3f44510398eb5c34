"""The simulator against spike trains computed by hand and an independent re-implementation.

The networks are tiny fx graphs built here (Linear → IF → Linear …), so every number the
simulator reports (accuracy per t, agreement, synaptic operations, layer statistics) can be
recomputed in plain numpy.  Weights, inputs and thresholds are dyadic, so both sides compute
exactly and the comparisons are equalities, not tolerances.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import fx, nn

from core.encoders import DirectEncoder, RateEncoder
from core.graph.modules import CQActivation
from core.graph.patterns import trace
from core.neurons import ASGNeuron, IFNeuron
from core.report import Latency
from core.simulate import bytes_per_sample_step, simulate, topk_correct
from core.snn import SpikingNetwork
from tests.conftest import linear_layer

CPU = torch.device("cpu")


def _snn(modules: list[nn.Module], neurons: dict[str, nn.Module], encoder, timesteps: int
         ) -> SpikingNetwork:
    """The ANN ``modules`` as reference, and the same graph with ``neurons`` swapped in."""
    reference = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules))).eval()
    network = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules)))
    for name, neuron in neurons.items():
        network.add_submodule(name, neuron)
    return SpikingNetwork(
        method="test", network=network.eval(), reference=reference, encoder=encoder,
        timesteps=timesteps,
        latency=Latency(window=timesteps, end_to_end_steps=timesteps, anytime=True))


def _run(snn, x, y, *, batch_size=None, memory_budget_mb=64.0, progress=None):
    return simulate(snn, x, y, sample_shape=tuple(x.shape[1:]),
                    batch_size=batch_size or len(x), device=CPU,
                    memory_budget_mb=memory_budget_mb, progress=progress)


def test_one_if_neuron_spikes_as_computed_by_hand():
    # x = 0.5 into θ = 1, reset by subtraction: u = 0.5, 1 → spike, 0.5, 1 → spike, … so the
    # count after t steps is n(t) = ⌊t/2⌋.  Class 0 receives the spikes, class 1 a constant
    # 0.375 per step: the readout after t compares n(t) with 0.375·t.
    modules = [linear_layer([[1.0]]), nn.ReLU(), linear_layer([[1.0], [0.0]], bias=[0.0, 0.375])]
    snn = _snn(modules, {"1": IFNeuron(1.0)}, DirectEncoder(), timesteps=6)
    result = _run(snn, np.array([[0.5]], np.float32), np.array([0]))
    # t:        1: 0 < .375   2: 1 > .75   3: 1 < 1.125   4: 2 > 1.5   5: 2 > 1.875   6: 3 > 2.25
    assert result.top1 == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert result.reference_top1 == 1.0  # the ANN: logits (0.5, 0.375)
    assert result.agreement == result.top1
    assert result.top5 == [1.0] * 6  # k = 5 is clipped to the two classes
    assert result.sops == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]  # spikes × fan-out 1 of the readout
    assert result.analog_input  # the direct encoder feeds the analog value as a current
    # so the first layer multiplies: its 1 MAC per sample is in every step's energy
    # Horowitz 45 nm fp32 (the default): 3.7 + 0.9 pJ per MAC, 0.9 pJ per SOP
    assert result.energy_uj == pytest.approx([(4.6 * 1 + 0.9 * s) * 1e-6
                                              for s in result.sops])
    assert len(result.layers) == 1
    layer = result.layers[0]
    assert (layer.name, layer.kind, layer.channels) == ("1", "if", 1)
    assert layer.threshold_mean == layer.threshold_min == layer.threshold_max == 1.0
    assert layer.firing_rate == 0.5 and layer.rate_error == 0.0  # 3 spikes in 6 = 0.5/θ
    assert layer.silent_fraction == 0.0 and layer.saturated_fraction == 0.0
    assert layer.spikes_per_sample == result.spikes_per_sample == 3.0


def test_spikes_per_sample_add_up_over_layers_and_samples():
    # two samples, x = 0.5 and 0.25, θ = 1, T = 4, then a second IF layer θ = 0.5 fed the
    # first layer's spikes ×0.5: layer 1 fires 2 and 1 spikes (u = .5, 1→0, .5, 1→0 and
    # .25, .5, .75, 1); layer 2 gets 0.5 per spike: 0 .5 0 .5 → u = 0, .5→0, 0, .5→0: 2
    # spikes, and 0 0 0 .5: 1 spike.  Per sample: (2 + 2 + 1 + 1) / 2 = 3 spikes.
    modules = [linear_layer([[1.0]]), nn.ReLU(), linear_layer([[0.5]]), nn.ReLU(),
               linear_layer([[1.0]])]
    snn = _snn(modules, {"1": IFNeuron(1.0), "3": IFNeuron(0.5)}, DirectEncoder(), timesteps=4)
    result = _run(snn, np.array([[0.5], [0.25]], np.float32), np.array([0, 0]))
    assert [layer.spikes_per_sample for layer in result.layers] == [1.5, 1.5]
    assert result.spikes_per_sample == 3.0
    assert result.model_dump()["spikes_per_sample"] == 3.0  # in report.json


@pytest.mark.parametrize(("reset", "spikes"), [("subtract", 6), ("zero", 4)])
def test_reset_mode_changes_the_spike_train(reset, spikes):
    # x = 0.75, θ = 1, 8 steps.  subtract: u = .75, 1.5→.5, 1.25→.25, 1→0, … 6 spikes;
    # zero: u = .75, 1.5→0, .75, 1.5→0, … 4 spikes.
    modules = [linear_layer([[1.0]]), nn.ReLU(), linear_layer([[1.0]])]
    snn = _snn(modules, {"1": IFNeuron(1.0, reset=reset)}, DirectEncoder(), timesteps=8)
    result = _run(snn, np.array([[0.75]], np.float32), np.array([0]))
    assert result.sops[-1] == spikes
    assert result.layers and result.layers[0].firing_rate == spikes / 8
    assert result.layers[0].rate_error == pytest.approx(abs(0.75 - spikes / 8))


def test_topk_correct_counts_rows_with_the_label_among_the_k_largest():
    logits = torch.tensor([[0.1, 0.5, 0.4, 0.0],    # label 2: second largest
                           [0.9, 0.05, 0.03, 0.02],  # label 0: largest
                           [0.2, 0.1, 0.3, 0.4]])    # label 1: smallest
    labels = torch.tensor([2, 0, 1])
    assert [int(topk_correct(logits, labels, k)) for k in (1, 2, 3, 4, 10)] == [1, 2, 2, 3, 3]
    # with a leading time axis [steps, B, K]: one count per step
    steps = torch.stack([logits, logits.flip(-1)])
    assert topk_correct(steps, labels, 1).tolist() == [1, 1]  # flipped: only row 2 is right


def _budget(snn: SpikingNetwork, sample_shape, batch: int, steps: int) -> float:
    """A memory budget (MB) that lets the simulator run ``steps`` steps per chunk."""
    return (steps + 0.5) * bytes_per_sample_step(snn.reference, sample_shape) * batch / 2**20


def _dyadic(rng, shape, low, high, denominator):
    return rng.integers(low, high, size=shape).astype(np.float64) / denominator


def _oracle(x, y, layers, thresholds, readout, steps, reference_prediction):
    """Plain numpy IF simulation with the rate code s[t] = ⌊x·t⌋ − ⌊x·(t−1)⌋, reset by
    subtraction, spike amplitude = θ and readout = the output current accumulated to t."""
    n = len(x)
    membranes = [np.zeros((n, len(b))) for _, b in layers]
    counts = [np.zeros((n, len(b))) for _, b in layers]
    accumulated = np.zeros((n, len(readout[1])))
    fanouts = [(w != 0).sum(0) for w, _ in (*layers, readout)]
    top1, top5, agree, sops = [], [], [], []
    events = 0.0
    for t in range(1, steps + 1):
        signal = np.floor(x * t) - np.floor(x * (t - 1))
        events += ((signal != 0) @ fanouts[0]).sum()
        for i, ((w, b), theta) in enumerate(zip(layers, thresholds, strict=True)):
            membranes[i] += signal @ w.T + b
            fired = membranes[i] >= theta
            membranes[i] -= fired * theta
            counts[i] += fired
            signal = fired * theta
            events += (fired @ fanouts[i + 1]).sum()
        accumulated += signal @ readout[0].T + readout[1]
        order = np.argsort(-accumulated, axis=1, kind="stable")
        top1.append(int((order[:, 0] == y).sum()) / n)
        top5.append(int((order[:, :5] == y[:, None]).any(1).sum()) / n)
        agree.append(int((order[:, 0] == reference_prediction).sum()) / n)
        sops.append(events / n)
    return top1, top5, agree, sops, counts


def test_a_two_layer_network_matches_an_independent_simulation_across_chunks_and_batches():
    rng = np.random.default_rng(19)
    samples, steps, classes = 30, 12, 7
    x = _dyadic(rng, (samples, 6), 0, 9, 8)  # k/8 in [0, 1]: the rate code is exact
    layers = [(_dyadic(rng, (5, 6), -3, 5, 8), _dyadic(rng, 5, -1, 2, 8)),
              (_dyadic(rng, (4, 5), -3, 5, 8), _dyadic(rng, 4, -1, 2, 8))]
    thresholds = [np.array([1.0]), np.array([0.5, 0.75, 1.0, 1.25])]  # per layer, per channel
    # the readout's bias k/65536 breaks every tie between classes (both sides stay exact)
    readout = (_dyadic(rng, (classes, 4), -4, 5, 8), np.arange(classes) / 65536)
    modules = [linear_layer(layers[0][0], layers[0][1]), nn.ReLU(),
               linear_layer(layers[1][0], layers[1][1]), nn.ReLU(), linear_layer(*readout)]
    neurons = {"1": IFNeuron(float(thresholds[0][0])),
               "3": IFNeuron(torch.tensor(thresholds[1], dtype=torch.float32))}
    snn = _snn(modules, neurons, RateEncoder(), steps)
    with torch.no_grad():
        reference = snn.reference(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()
    # labels: mostly the ANN's answer, so accuracy climbs as the SNN approaches the ANN
    y = np.where(rng.random(samples) < 0.7, reference, rng.integers(0, classes, samples))

    top1, top5, agree, sops, counts = _oracle(x, y, layers, thresholds, readout, steps,
                                              reference)
    # the case has something to see: answers still change after the first chunk, and most
    # neurons neither stay silent nor fire at every step
    assert len(set(top1[5:])) > 3 and len(set(agree[5:])) > 3 and len(set(top5[5:])) > 2
    assert all(((c > 0) & (c < steps)).mean() > 0.4 for c in counts)

    # batches of 7 (the last one 2) and a budget that allows 5 steps per chunk (5, 5, 2)
    batch = 7
    fractions: list[float] = []
    result = _run(snn, x.astype(np.float32), y, batch_size=batch,
                  memory_budget_mb=_budget(snn, (6,), batch, steps=5),
                  progress=lambda fraction, _partial: fractions.append(fraction))
    assert result.top1 == top1 and result.top5 == top5 and result.agreement == agree
    assert result.sops == pytest.approx(sops, rel=1e-12)
    assert result.reference_top1 == (reference == y).mean()
    assert all(b >= a for a, b in zip(result.sops, result.sops[1:], strict=False))
    assert all(t5 >= t1 for t1, t5 in zip(result.top1, result.top5, strict=True))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    assert [layer.name for layer in result.layers] == ["1", "3"]
    for layer, count, theta in zip(result.layers, counts, thresholds, strict=True):
        assert layer.kind == "if" and layer.channels == len(theta)
        assert (layer.threshold_min, layer.threshold_max) == (theta.min(), theta.max())
        assert layer.firing_rate == pytest.approx(count.mean() / steps)
        assert layer.silent_fraction == pytest.approx((count == 0).mean())


def test_the_readout_is_the_same_for_any_chunk_length():
    rng = np.random.default_rng(3)
    x = _dyadic(rng, (9, 4), 0, 9, 8).astype(np.float32)
    y = rng.integers(0, 3, 9)
    modules = [linear_layer(_dyadic(rng, (5, 4), -2, 7, 8)), nn.ReLU(),
               linear_layer(_dyadic(rng, (3, 5), -4, 9, 8), np.arange(3) / 65536)]
    runs = []
    for budget_steps in (1, 4, 16):
        snn = _snn(modules, {"1": IFNeuron(0.75)}, RateEncoder(), timesteps=16)
        runs.append(_run(snn, x, y, batch_size=4,
                         memory_budget_mb=_budget(snn, (4,), 4, steps=budget_steps)))
    first = runs[0]
    assert first.layers
    for other in runs[1:]:
        assert (other.top1, other.agreement, other.sops) == (first.top1, first.agreement,
                                                             first.sops)
        assert other.layers == first.layers


def test_asg_readout_and_sops_per_t_match_a_full_rerun_and_any_batch_split():
    # Linear → ASG → Linear → ASG → Linear: the simulator runs the first part once and
    # re-runs only the terminal neuron and the readout for each t; the oracle re-runs the
    # whole network with the terminal neuron's readout_step = t.
    rng = np.random.default_rng(5)
    x = _dyadic(rng, (9, 4), 0, 9, 8).astype(np.float32)
    y = rng.integers(0, 3, 9)
    w1, w2 = _dyadic(rng, (5, 4), -2, 7, 8), _dyadic(rng, (4, 5), -2, 7, 8)
    w3 = _dyadic(rng, (3, 4), -4, 9, 8)
    w2[0, 1] = w3[1, 2] = 0.0  # a missing synapse lowers the fan-out
    modules = [linear_layer(w1), CQActivation(1.0, 4), linear_layer(w2), CQActivation(1.0, 4),
               linear_layer(w3)]
    window = 4

    def asg_snn():
        reference = trace(nn.Sequential(*modules)).eval()
        network = trace(reference)
        for name in ("1", "3"):
            network.add_submodule(name, ASGNeuron(1.0, 4))
        network.recompile()
        return SpikingNetwork(method="test", network=network.eval(), reference=reference,
                              encoder=DirectEncoder(), timesteps=window,
                              latency=Latency(window=window, end_to_end_steps=3 * window,
                                              anytime=True), mode="asg")

    whole, split = _run(asg_snn(), x, y), _run(asg_snn(), x, y, batch_size=4)
    oracle = asg_snn()
    first, last = oracle.network.get_submodule("1"), oracle.network.get_submodule("3")
    top1, sops = [], []
    with torch.no_grad():
        for t in range(1, window + 1):
            last.readout_step = t
            out = oracle.network(torch.from_numpy(x))
            top1.append(float((out.argmax(-1).numpy() == y).mean()))
            events = first.spike_count.sum(0).numpy() @ (w2 != 0).sum(0) \
                + last.spike_counts_until(t).sum(0).numpy() @ (w3 != 0).sum(0)
            sops.append(float(events) / len(x))
    assert whole.top1 == split.top1 == top1
    assert whole.sops == split.sops == sops  # the split's t=1 once counted a stale pass
    assert whole.layers == split.layers and len(whole.layers) == 2
