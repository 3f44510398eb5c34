"""Streaming activation statistics against numpy on the full set of values."""

import numpy as np
import torch
from torch import nn

from core.calibrate import activation_maxima, activation_percentiles
from core.graph import canonicalize
from core.graph.analysis import activation_names


def setup():
    torch.manual_seed(0)
    gm = canonicalize(nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU()))
    data = torch.randn(40, 2, 6, 6)
    batches = lambda: iter(data.split(7))  # noqa: E731  (uneven batches on purpose)
    with torch.no_grad():
        values = gm(data)
    return gm, activation_names(gm), batches, values


def test_maxima_per_layer_and_per_channel():
    gm, names, batches, values = setup()
    layer = activation_maxima(gm, names, batches, per_channel=False)[names[0]]
    channel = activation_maxima(gm, names, batches, per_channel=True)[names[0]]
    assert torch.isclose(layer, values.max()).all()
    assert torch.allclose(channel, values.amax(dim=(0, 2, 3)))


def test_percentile_of_positive_values_within_one_bin():
    gm, names, batches, values = setup()
    bins = 4096
    got = activation_percentiles(gm, names, batches, percentile=99.0, per_channel=False,
                                 bins=bins)[names[0]].item()
    positive = values[values > 0].numpy()
    # the bin edge at or above the order statistic x_ceil(p·n)
    expected = np.percentile(positive, 99.0, method="inverted_cdf")
    assert expected - 1e-6 <= got <= expected + positive.max() / bins * 1.01
    per_channel = activation_percentiles(gm, names, batches, percentile=90.0,
                                         per_channel=True)[names[0]]
    for c in range(6):
        channel = values[:, c][values[:, c] > 0].numpy()
        expected = np.percentile(channel, 90.0, method="inverted_cdf")
        assert expected - 1e-6 <= per_channel[c].item() <= expected + channel.max() / 4096 * 1.01


def test_percentile_is_deterministic():
    gm, names, batches, _ = setup()
    first = activation_percentiles(gm, names, batches, percentile=99.9, per_channel=True)
    second = activation_percentiles(gm, names, batches, percentile=99.9, per_channel=True)
    assert torch.equal(first[names[0]], second[names[0]])
