"""Input encoders: totals, determinism, chunking."""

import torch

from core.encoders import (
    CountEncoder,
    DirectEncoder,
    PoissonEncoder,
    RateEncoder,
    evenly_spread,
)


def test_evenly_spread_emits_exactly_n_spikes_at_most_one_per_step():
    counts = torch.tensor([0, 1, 3, 7, 8])
    spikes = evenly_spread(counts, 8, 0, 8)
    assert spikes.sum(0).tolist() == [0, 1, 3, 7, 8]
    assert spikes.max() <= 1
    # 3 of 8: floor(3t/8) increases at t = 3, 6, 8
    assert spikes[:, 2].nonzero().flatten().tolist() == [2, 5, 7]


def test_rate_encoder_counts_floor_of_x_t_and_chunks_agree():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    encoder = RateEncoder()
    encoder.begin(x)
    whole = encoder.steps(0, 8)
    assert whole.sum(0).tolist() == [0, 2, 4, 8]
    assert torch.equal(torch.cat([encoder.steps(0, 3), encoder.steps(3, 8)]), whole)


def test_poisson_encoder_is_seeded():
    x = torch.full((2, 5), 0.3)
    first, second = PoissonEncoder(7), PoissonEncoder(7)
    first.begin(x)
    second.begin(x)
    a, b = first.steps(0, 50), second.steps(0, 50)
    assert torch.equal(a, b)
    assert 0.15 < a.mean().item() < 0.45


def test_direct_encoder_repeats_the_analog_input():
    x = torch.rand(3, 2)
    encoder = DirectEncoder()
    encoder.begin(x)
    assert torch.equal(encoder.steps(0, 4).view(4, 3, 2)[2], x)
    assert encoder.analog


class _Coding:
    window, levels = 4, 5

    def spike_counts(self, x):
        return torch.floor(x * self.levels).clamp(0, self.window).long()


def test_count_encoder_mean_is_counts_over_levels():
    encoder = CountEncoder(_Coding(), amplitude=0.8)  # m = T/L = 4/5
    x = torch.tensor([[0.0, 0.3, 0.65, 1.0]])
    encoder.begin(x)
    spikes = encoder.steps(0, 4)
    assert torch.allclose(spikes.mean(0), torch.tensor([0.0, 0.2, 0.6, 0.8]))
    assert torch.equal(encoder.window_mean(4), torch.tensor([[0.0, 0.2, 0.6, 0.8]]))
