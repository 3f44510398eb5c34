"""CQActivation: exact forward on hand-computed values, straight-through backward."""

import pytest
import torch

from core.graph.modules import CQActivation, cq_quantize

# (z, expected) for m = 1.0, L = 4 (T = 4): every value is exact in binary floating point.
TABLE_M1_L4 = [
    (-3.0, 0.0),  # negative → 0
    (-0.0001, 0.0),
    (0.0, 0.0),
    (0.2499, 0.0),  # just below the first level
    (0.25, 0.25),  # exactly at a level
    (0.4999, 0.25),
    (0.5, 0.5),
    (0.7499, 0.5),
    (0.75, 0.75),
    (0.9999, 0.75),
    (1.0, 1.0),  # at m
    (1.0001, 1.0),  # above m saturates
    (7.0, 1.0),
]

# m = 0.8, L = 10 (T = 8), values away from float rounding at the boundaries.
TABLE_M08_L10 = [
    (-0.5, 0.0),
    (0.05, 0.0),
    (0.15, 0.1),
    (0.3333, 0.3),
    (0.5999, 0.5),
    (0.61, 0.6),
    (0.7999, 0.7),
    (0.8, 0.8),
    (2.5, 0.8),
]


@pytest.mark.parametrize(
    ("clamp_max", "levels", "table"), [(1.0, 4, TABLE_M1_L4), (0.8, 10, TABLE_M08_L10)]
)
def test_forward_matches_hand_table(clamp_max, levels, table):
    z = torch.tensor([row[0] for row in table])
    expected = torch.tensor([row[1] for row in table])
    activation = CQActivation(clamp_max, levels)
    with torch.no_grad():
        plain = activation(z)
    trained = activation(z.clone().requires_grad_(True))
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(trained.detach(), expected, rtol=0, atol=1e-7)


def test_output_takes_only_the_t_plus_one_levels():
    activation = CQActivation(0.8, 10)
    values = activation(torch.linspace(-2, 2, 10001)).detach()
    counts = values * 10
    assert torch.allclose(counts, counts.round(), atol=1e-5)
    assert set(counts.round().int().tolist()) == set(range(9))


def test_straight_through_gradient_is_masked_and_clipped():
    z = torch.tensor([-0.5, 0.0, 0.3, 0.8, 1.2, 0.5, 0.6], requires_grad=True)
    upstream = torch.tensor([2.0, -3.0, 0.5, -0.7, 5.0, 1.5, -1.0])
    (CQActivation(0.8, 10)(z) * upstream).sum().backward()
    # outside [0, m] → 0; inside → upstream clipped to [-1, 1]
    expected = torch.tensor([0.0, -1.0, 0.5, -0.7, 0.0, 1.0, -1.0])
    torch.testing.assert_close(z.grad, expected)


def test_surrogate_margin_widens_the_window_by_whole_levels():
    # m = 0.25, L = 4 (T = 1): the only step is at z = m; margin k = 1 passes gradient for
    # -0.25 <= z <= 0.5, margin 0 (the paper) for 0 <= z <= 0.25
    z = torch.tensor([-0.3, -0.25, -0.1, 0.1, 0.25, 0.3, 0.5, 0.6])
    upstream = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -2.0, 0.5, 1.0])
    expected = {0.0: [0, 0, 0, 1, 1, 0, 0, 0], 1.0: [0, 1, 1, 1, 1, -1, 0.5, 0]}
    for margin, gradient in expected.items():
        leaf = z.clone().requires_grad_(True)
        (CQActivation(0.25, 4, surrogate_margin=margin)(leaf) * upstream).sum().backward()
        torch.testing.assert_close(leaf.grad, torch.tensor(gradient, dtype=torch.float32))


def test_surrogate_margin_leaves_the_forward_pass_alone():
    z = torch.linspace(-1, 2, 3001)
    narrow = CQActivation(0.8, 10)(z.clone().requires_grad_(True)).detach()
    wide = CQActivation(0.8, 10, surrogate_margin=3)(z.clone().requires_grad_(True)).detach()
    assert torch.equal(narrow, wide)
    with pytest.raises(ValueError):
        CQActivation(0.8, 10, surrogate_margin=-1)


def test_attributes_are_plain_numbers():
    activation = CQActivation(0.25, 4)
    assert type(activation.clamp_max) is float and activation.clamp_max == 0.25
    assert type(activation.levels) is int and activation.levels == 4
    assert activation.window == 1
    assert "floor" in CQActivation.__doc__


def test_functional_form_equals_module():
    z = torch.randn(1000)
    torch.testing.assert_close(cq_quantize(z, 0.8, 10), CQActivation(0.8, 10)(z).detach())


@pytest.mark.parametrize(("clamp_max", "levels"), [(0.0, 4), (1.0, 0)])
def test_rejects_meaningless_parameters(clamp_max, levels):
    with pytest.raises(ValueError):
        CQActivation(clamp_max, levels)
