"""VR encoding and ICE: hand-checked values, spike counts, first-layer widening."""

import pytest
import torch
from torch import nn

from core.errors import InvalidSpec, UnsupportedModel
from core.graph import trace
from core.graph.modules import ICEExpand, VREncode
from core.train.input_coding import with_input_coding


def test_vr_values_and_counts_by_hand():
    # L = 4, m = 0.5 → T = 2: counts floor(4p) capped at 2
    pixels = torch.tensor([0.0, 0.2, 0.25, 0.49, 0.5, 0.74, 0.75, 1.0])
    encoder = VREncode(levels=4, clamp_max=0.5)
    counts = encoder.spike_counts(pixels)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    torch.testing.assert_close(
        encoder(pixels), torch.tensor([0, 0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5])
    )
    assert encoder.window == 2 and encoder.expansion == 1


def test_vr_count_is_levels_times_value():
    encoder = VREncode(levels=10, clamp_max=0.8)
    pixels = torch.rand(3, 3, 5, 5)
    counts = encoder.spike_counts(pixels)
    assert int(counts.min()) >= 0 and int(counts.max()) <= 8
    torch.testing.assert_close(encoder(pixels) * 10, counts.float())


def test_ice_values_by_hand():
    # L = 4, m = 0.75 → T = 3; grids 3, 4, 5; two channels with p = 0.5 and 0.9
    pixels = torch.tensor([0.5, 0.9]).reshape(1, 2, 1, 1)
    encoder = ICEExpand(levels=4, clamp_max=0.75)
    # grid 3: floor(1.5)=1, floor(2.7)=2; grid 4: 2, 3; grid 5: 2, floor(4.5)=4 → cap 3
    assert encoder.spike_counts(pixels).flatten().tolist() == [1, 2, 2, 3, 2, 3]
    torch.testing.assert_close(
        encoder(pixels).flatten(), torch.tensor([0.25, 0.5, 0.5, 0.75, 0.5, 0.75])
    )
    doubled = ICEExpand(levels=4, clamp_max=0.75, copies=2)
    assert doubled.expansion == 6
    assert doubled.spike_counts(pixels).flatten().tolist() == [1, 2, 2, 3, 2, 3] * 2


def test_ice_skips_grids_at_or_below_zero():
    encoder = ICEExpand(levels=1, clamp_max=1.0, grids=3)
    assert encoder.grid_levels == [1, 2]
    assert encoder.expansion == 2
    pixels = torch.tensor([0.6]).reshape(1, 1, 1, 1)
    # grid 1: floor(0.6)=0; grid 2: floor(1.2)=1 (T = 1)
    assert encoder.spike_counts(pixels).flatten().tolist() == [0, 1]


@pytest.mark.parametrize(
    "make", [lambda: VREncode(4, 0.3), lambda: ICEExpand(4, 0.5, grids=2), lambda: ICEExpand(0, 1)]
)
def test_invalid_encoder_parameters_are_refused(make):
    with pytest.raises(InvalidSpec):
        make()


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)
    ).eval()


def _linear_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 5)).eval()


def _mean_over_copies(expanded: torch.Tensor, channels: int) -> torch.Tensor:
    batch, width, *rest = expanded.shape
    return expanded.reshape(batch, width // channels, channels, *rest).mean(1)


@pytest.mark.parametrize("make_model", [_conv_model, _linear_model])
def test_ice_widened_layer_equals_original_on_mean_of_copies(make_model):
    model = trace(make_model())
    encoder = ICEExpand(levels=4, clamp_max=1.0, grids=3, copies=2)
    widened = with_input_coding(model, encoder)
    pixels = torch.rand(8, 3, 4, 4)
    with torch.no_grad():
        got = widened(pixels)
        oracle = model(_mean_over_copies(encoder(pixels), 3))
    torch.testing.assert_close(got, oracle, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make_model", [_conv_model, _linear_model])
def test_ice_widening_approximately_preserves_the_function(make_model):
    model = trace(make_model())
    pixels = torch.rand(16, 3, 4, 4)
    with torch.no_grad():
        reference = model(pixels)
        coarse = with_input_coding(model, ICEExpand(levels=4, clamp_max=1.0))(pixels)
        fine = with_input_coding(model, ICEExpand(levels=64, clamp_max=1.0))(pixels)
    error_fine = (fine - reference).abs().max()
    assert error_fine < 0.05
    assert error_fine < (coarse - reference).abs().max()  # finer grids, closer function


def test_with_input_coding_adds_encoder_first_and_does_not_mutate():
    model = trace(_conv_model())
    code = model.code
    weight = model.get_submodule("0").weight.clone()
    encoded = with_input_coding(model, ICEExpand(levels=4, clamp_max=1.0))
    assert model.code == code and torch.equal(model.get_submodule("0").weight, weight)
    first = next(n for n in encoded.graph.nodes if n.op == "call_module")
    assert isinstance(encoded.get_submodule(first.target), ICEExpand)
    assert encoded.get_submodule("0").in_channels == 9
    torch.testing.assert_close(encoded.get_submodule("0").bias, model.get_submodule("0").bias)

    vr = with_input_coding(model, VREncode(levels=4, clamp_max=1.0))
    pixels = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(vr(pixels), model(VREncode(4, 1.0)(pixels)))


def test_ice_refuses_input_that_does_not_reach_a_widenable_layer():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) + x

    with pytest.raises(UnsupportedModel):
        with_input_coding(trace(Residual()), ICEExpand(levels=4, clamp_max=1.0))
