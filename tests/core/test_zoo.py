"""Tests for core.zoo: every architecture builds, traces and has the documented shapes."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from core import zoo
from core.errors import InvalidSpec

# Parameter counts computed by hand from the layer lists (weights + biases + BN affine).
EXPECTED_PARAMS = {
    # 64*128+128 + 128*64+64 + 64*10+10
    "mlp-digits": 8320 + 8256 + 650,
    # conv 1*6*25+6, conv 6*16*25+16, fc 400*120+120, 120*84+84, 84*10+10
    "lenet5": 156 + 2416 + 48120 + 10164 + 850,
    # conv 9*16 + bn 32, conv 16*32*9 + bn 64, fc 1568*10+10
    "cnn-small": 144 + 32 + 4608 + 64 + 15690,
}


@pytest.mark.parametrize("name", zoo.names())
def test_builds_traces_and_gives_documented_output_shape(name: str) -> None:
    arch = zoo.info(name)
    model = zoo.build(name).eval()
    traced = fx.symbolic_trace(model)
    x = torch.rand(3, *arch.input_shape)
    with torch.no_grad():
        expected = model(x)
        got = traced(x)
    assert got.shape == (3, arch.num_classes)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", zoo.names())
def test_each_relu_module_is_called_once(name: str) -> None:
    traced = fx.symbolic_trace(zoo.build(name))
    modules = dict(traced.named_modules())
    relu_calls = [
        n.target
        for n in traced.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], nn.ReLU)
    ]
    relu_modules = [m for m in traced.modules() if isinstance(m, nn.ReLU)]
    assert relu_calls, "every zoo net has activations"
    assert len(relu_calls) == len(set(relu_calls)) == len(relu_modules)


@pytest.mark.parametrize("name", zoo.names())
def test_overrides_num_classes_and_in_channels(name: str) -> None:
    arch = zoo.info(name)
    model = zoo.build(name, num_classes=7, in_channels=arch.input_shape[0] + 2).eval()
    x = torch.rand(2, arch.input_shape[0] + 2, *arch.input_shape[1:])
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", zoo.names())
def test_returned_in_training_mode(name: str) -> None:
    assert zoo.build(name).training


@pytest.mark.parametrize(("name", "count"), EXPECTED_PARAMS.items())
def test_small_nets_parameter_counts(name: str, count: int) -> None:
    assert sum(p.numel() for p in zoo.build(name).parameters()) == count


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("mnist-7conv", 150_000, 300_000),
        ("vgg-star", 8_000_000, 11_000_000),
        ("vgg16", 14_000_000, 15_500_000),  # the CIFAR VGG-16 is about 14.7 M
        ("resnet18", 11_000_000, 11_300_000),  # the CIFAR ResNet-18 is about 11.17 M
        ("resnet20", 260_000, 290_000),  # the CIFAR ResNet-20 is about 0.27 M
    ],
)
def test_large_nets_parameter_counts_are_sane(name: str, low: int, high: int) -> None:
    assert low <= sum(p.numel() for p in zoo.build(name).parameters()) <= high


def _classifier_in_features(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].in_features


def test_mnist_7conv_flattens_to_512_as_in_the_paper() -> None:
    model = zoo.build("mnist-7conv")
    assert _classifier_in_features(model) == 512
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    features = nn.Sequential(*list(model.children())[:-2]).eval()
    with torch.no_grad():
        assert features(torch.rand(1, 1, 28, 28)).shape == (1, 128, 2, 2)


def test_vgg_star_flattens_to_1024() -> None:
    model = zoo.build("vgg-star")
    assert _classifier_in_features(model) == 1024
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [128, 128, 256, 256, 512, 512, 1024]
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 4
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_lenet5_uses_max_pooling() -> None:
    assert sum(isinstance(m, nn.MaxPool2d) for m in zoo.build("lenet5").modules()) == 2


def test_resnet_residual_adds_are_followed_by_a_relu_module() -> None:
    traced = fx.symbolic_trace(zoo.build("resnet20"))
    modules = dict(traced.named_modules())
    adds = [n for n in traced.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == 9
    for add in adds:
        (user,) = add.users
        assert user.op == "call_module" and isinstance(modules[user.target], nn.ReLU)


def test_resnet20_uses_projection_only_where_the_shape_changes() -> None:
    model = zoo.build("resnet20")
    shortcuts = [m.shortcut for m in model.modules() if isinstance(m, zoo.BasicBlock)]
    assert len(shortcuts) == 9
    assert [len(s) for s in shortcuts] == [0, 0, 0, 2, 0, 0, 2, 0, 0]


def test_resnet18_has_no_stem_max_pool_and_eight_blocks() -> None:
    model = zoo.build("resnet18")
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, zoo.BasicBlock) for m in model.modules()) == 8


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(InvalidSpec) as err:
        zoo.info("alexnet")
    for name in zoo.names():
        assert name in str(err.value)
    with pytest.raises(InvalidSpec):
        zoo.build("alexnet")


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(InvalidSpec):
        zoo.build("lenet5", num_classes=0)


def test_names_match_infos() -> None:
    assert zoo.names() == [zoo.info(n).name for n in zoo.names()]
    assert {"mlp-digits", "lenet5", "cnn-small", "mnist-7conv", "vgg-star", "vgg16",
            "resnet18", "resnet20"} == set(zoo.names())  # fmt: skip
