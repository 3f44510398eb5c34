"""Neurons against hand-computed spike trains."""

import torch

from core.neurons import ASGNeuron, IFNeuron, SpikeMaxPool, reset_state, set_steps


def run(neuron, currents):
    """currents: [T, B, ...] → outputs [T, B, ...] in one multi-step call."""
    set_steps(neuron, currents.shape[0])
    return neuron(currents.reshape(-1, *currents.shape[2:])).view_as(currents)


def test_if_reset_by_subtraction_matches_hand_computed_train():
    # θ = 1, I = 0.4: u = .4, .8, 1.2→.2 (spike), .6, 1.0→0 (spike), .4
    neuron = IFNeuron(1.0)
    out = run(neuron, torch.full((6, 1, 1), 0.4))
    assert out.flatten().tolist() == [0, 0, 1, 0, 1, 0]
    assert neuron.spike_count.item() == 2
    assert torch.allclose(neuron.membrane, torch.tensor([[0.4]]), atol=1e-6)


def test_if_reset_to_zero_loses_the_residual():
    # θ = 1, I = 0.6: u = .6, 1.2→0 (spike), .6, 1.2→0 (spike)
    out = run(IFNeuron(1.0, reset="zero"), torch.full((4, 1, 1), 0.6))
    assert out.flatten().tolist() == [0, 1, 0, 1]


def test_half_threshold_start_rounds_instead_of_flooring():
    # u0 = θ/2 = .5, I = .3: u = .8, 1.1→.1 (spike), .4, .7, 1.0→0 (spike)
    out = run(IFNeuron(1.0, initial_fraction=0.5), torch.full((5, 1, 1), 0.3))
    assert out.flatten().tolist() == [0, 1, 0, 0, 1]


def test_spike_amplitude_and_per_channel_thresholds():
    neuron = IFNeuron(torch.tensor([1.0, 2.0]), amplitude=torch.tensor([0.5, 3.0]))
    out = run(neuron, torch.full((2, 1, 2), 1.0))
    # channel 0 fires both steps with amplitude .5; channel 1 reaches 2 at step 2
    assert out[:, 0, 0].tolist() == [0.5, 0.5]
    assert out[:, 0, 1].tolist() == [0.0, 3.0]


def test_state_carries_across_chunks():
    whole = IFNeuron(1.0)
    chunked = IFNeuron(1.0)
    currents = torch.rand(8, 3, 4, generator=torch.Generator().manual_seed(0))
    expected = run(whole, currents)
    got = torch.cat([run(chunked, currents[:3]), run(chunked, currents[3:])])
    assert torch.equal(expected, got)
    reset_state(chunked)
    assert chunked.membrane is None


def test_negative_membrane_is_kept():
    out = run(IFNeuron(1.0), torch.tensor([-1.0, 0.6, 0.6, 0.6]).view(4, 1, 1))
    # u = -1, -.4, .2, .8: never reaches θ
    assert out.sum().item() == 0


def test_asg_count_equals_cq_activation_and_spreads_evenly():
    neuron = ASGNeuron(clamp_max=0.8, levels=10)  # T = 8
    mean_current = torch.tensor([-0.3, 0.0, 0.25, 0.5, 0.79, 0.8, 2.0])
    out = neuron(mean_current)
    assert neuron.spike_count.tolist() == [0, 0, 2, 5, 7, 8, 8]
    assert torch.allclose(out, torch.tensor([0, 0, 0.2, 0.5, 0.7, 0.8, 0.8]))
    # IF with constant drive c̄: after t steps floor(t·c̄/θ) spikes; 0.5/0.8 = 0.625
    assert neuron.spike_counts_until(4)[3].item() == 2  # floor(4·0.625)
    assert neuron.spike_counts_until(8).tolist() == neuron.spike_count.tolist()


def test_spike_max_pool_passes_the_most_active_input():
    pool = SpikeMaxPool(torch.nn.MaxPool2d(2))
    # one 2×2 window; input (0,1) spikes every step, (1,0) only at step 0
    steps = torch.zeros(4, 1, 1, 2, 2)
    steps[:, 0, 0, 0, 1] = 1.0
    steps[0, 0, 0, 1, 0] = 1.0
    set_steps(pool, 4)
    assert pool(steps.view(4, 1, 2, 2)).flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    steps[2, 0, 0, 0, 1] = 0.0  # the leader pauses: the gate still follows it
    reset_state(pool)
    assert pool(steps.view(4, 1, 2, 2)).flatten().tolist() == [1.0, 1.0, 0.0, 1.0]
