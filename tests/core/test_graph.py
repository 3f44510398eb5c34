"""Graph passes: each checked against the original model as the oracle."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UnsupportedModel
from core.graph import canonicalize, preflight, require_convertible
from core.graph.analysis import activation_names
from core.graph.modules import ChannelAffine, ClampedReLU, CQActivation


def randomised(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics, then switch to eval."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            n = module.num_features
            module.running_mean = torch.randn(n, generator=generator)
            module.running_var = torch.rand(n, generator=generator) + 0.5
            module.weight.data = torch.randn(n, generator=generator)
            module.bias.data = torch.randn(n, generator=generator)
    return model.eval()


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.lone_bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = torch.clamp(self.lone_bn(y + y), 0, 6)
        y = F.max_pool2d(y, 2)
        y = self.drop(y).flatten(1)
        return torch.softmax(F.relu6(self.bn1d(self.fc(y))), dim=1)


def test_canonical_graph_computes_the_same_function_without_softmax():
    model = randomised(Mixed())
    gm = canonicalize(model)
    x = torch.randn(4, 3, 8, 8)
    expected = F.relu6(model.bn1d(model.fc(
        F.max_pool2d(torch.clamp(model.lone_bn(2 * F.relu(model.bn(model.conv(x)))), 0, 6), 2)
        .flatten(1))))
    assert torch.allclose(gm(x), expected, atol=1e-5)
    kinds = [type(m) for m in gm.modules()]
    assert nn.BatchNorm2d not in kinds and nn.BatchNorm1d not in kinds and nn.Dropout not in kinds
    assert ChannelAffine in kinds and nn.MaxPool2d in kinds
    clamps = [m.clamp_max for m in gm.modules() if isinstance(m, ClampedReLU)]
    assert clamps == [None, 6.0, 6.0]


def test_original_model_is_not_mutated():
    model = randomised(Mixed())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canonicalize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class ExportedCQ(nn.Module):
    """The CQ activation as ONNX spells it: Clip → Mul → Floor → Div."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        y = torch.floor(torch.clamp(self.conv(x), 0.0, 0.8) * 10.0) / 10.0
        return self.fc(y.flatten(1))


def test_cq_pattern_becomes_one_cq_activation():
    model = ExportedCQ().eval()
    gm = canonicalize(model)
    cq = [m for m in gm.modules() if isinstance(m, CQActivation)]
    assert len(cq) == 1 and cq[0].clamp_max == pytest.approx(0.8) and cq[0].levels == 10
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(gm(x), model(x), atol=1e-6)
    report = preflight(gm, fmt="module", input_shape=(1, 8, 8))
    assert report.cq_layers == 1 and report.convertible


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(torch.sigmoid(h) * h)


def test_preflight_lists_unsupported_nodes_and_refuses():
    report = preflight(canonicalize(Gated()), fmt="module", input_shape=(4,))
    unsupported = {v.name for v in report.nodes if v.status == "unsupported"}
    assert unsupported == {"sigmoid", "mul"}
    assert not report.convertible
    with pytest.raises(UnsupportedModel, match="sigmoid"):
        require_convertible(report)


def test_model_without_activations_is_refused_loudly():
    report = preflight(canonicalize(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))),
                       fmt="module", input_shape=(4,))
    assert report.spiking_layers == 0 and not report.convertible
    assert any("no ReLU-like activation" in p for p in report.problems)


def test_activation_names_follow_execution_order():
    gm = canonicalize(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU6()))
    names = activation_names(gm)
    assert len(names) == 2
    assert isinstance(gm.get_submodule(names[1]), ClampedReLU)
    assert gm.get_submodule(names[1]).clamp_max == 6.0
