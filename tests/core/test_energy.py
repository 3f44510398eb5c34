"""Operation counts against closed-form formulas."""

import torch
from torch import nn

from core.energy import analog_layers, count_macs, fanout_map, synaptic_fanouts
from core.graph import canonicalize


def test_linear_fanout_counts_nonzero_weights_per_input():
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, 0] = 1.0
        layer.weight[1, 2] = 1.0
    assert fanout_map(layer, torch.Size([1, 3])).tolist() == [4.0, 0.0, 1.0]


def test_conv_macs_match_the_textbook_formula():
    gm = canonicalize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)))
    macs = count_macs(synaptic_fanouts(gm, (3, 8, 8)))
    # padded taps are not counted: along each axis the 8 outputs see 2+3·6+2 = 22 inputs
    assert macs["0"] == 22 * 22 * 3 * 8
    assert macs["2"] == 8 * 4 * 4 * 4
    assert macs["4"] == 8 * 4 * 4 * 10


def test_analog_layers_stop_at_the_first_activation():
    gm = canonicalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))
    assert analog_layers(gm) == {"0"}
