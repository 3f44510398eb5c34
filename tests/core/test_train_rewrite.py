"""to_cq: every ReLU becomes CQ, pools are quantised, the input model is untouched."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from core.graph import trace
from core.graph.modules import CQActivation
from core.train.rewrite import to_cq

M, L = 0.8, 10


class ManyReluSpellings(nn.Module):
    """Each hidden activation is written a different way; pools of every kind."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.max_pool = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu6 = nn.ReLU6()
        self.conv5 = nn.Conv2d(4, 4, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 8)
        self.fc4 = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.max_pool(torch.relu(self.conv3(x)))
        x = self.relu6(self.conv4(x)).clamp(min=0)  # clamp after relu6: another CQ
        x = F.avg_pool2d(self.conv5(x).relu(), 1)
        x = torch.flatten(self.global_pool(x), 1)
        x = torch.clamp(self.fc1(x), 0, 2)
        x = F.hardtanh(self.fc2(x), 0.0, 1.0)
        x = torch.clamp(self.fc3(x), -1, 1)  # not a ReLU: lower bound -1
        return self.fc4(x)


def _relu_like_nodes(graph_module: fx.GraphModule) -> list[str]:
    modules = dict(graph_module.named_modules())
    found = []
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.ReLU | nn.Hardtanh):
            found.append(node.name)
        if node.op == "call_function" and node.target in (F.relu, torch.relu, F.hardtanh):
            found.append(node.name)
        if node.op == "call_method" and node.target == "relu":
            found.append(node.name)
        if node.target in (torch.clamp, "clamp") and node.kwargs.get("min", 0) == 0:
            if len(node.args) < 2 or node.args[1] == 0:
                found.append(node.name)
    return found


def _cq_nodes(graph_module):
    modules = dict(graph_module.named_modules())
    return [
        node
        for node in graph_module.graph.nodes
        if node.op == "call_module" and isinstance(modules[node.target], CQActivation)
    ]


def test_every_relu_spelling_becomes_cq():
    model = ManyReluSpellings()
    assert len(_relu_like_nodes(trace(model))) == 8
    converted = to_cq(model, M, L)
    assert _relu_like_nodes(converted) == []
    modules = dict(converted.named_modules())
    # 8 activations, plus one after each of the 4 average pools (all feed a later layer)
    cq = _cq_nodes(converted)
    assert len(cq) == 8 + 4
    assert all(modules[n.target].clamp_max == M and modules[n.target].levels == L for n in cq)
    clamps = [n for n in converted.graph.nodes if n.target is torch.clamp]
    assert len(clamps) == 1 and clamps[0].args[1:] == (-1, 1)


def test_every_average_pool_is_followed_by_cq_and_max_pool_is_gone():
    converted = to_cq(ManyReluSpellings(), M, L)
    modules = dict(converted.named_modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in modules.values())
    average_pools = nn.AvgPool2d | nn.AdaptiveAvgPool2d
    pools = [
        n
        for n in converted.graph.nodes
        if (n.op == "call_module" and isinstance(modules[n.target], average_pools))
        or n.target is F.avg_pool2d
    ]
    assert len(pools) == 4
    for pool in pools:
        assert [isinstance(modules.get(u.target), CQActivation) for u in pool.users] == [True]
    replaced = modules["max_pool"]
    assert isinstance(replaced, nn.AvgPool2d) and replaced.kernel_size == 2 and replaced.stride == 2


def test_surrogate_margin_reaches_every_cq_activation():
    converted = to_cq(ManyReluSpellings(), M, L, surrogate_margin=1.5)
    margins = {converted.get_submodule(n.target).surrogate_margin for n in _cq_nodes(converted)}
    assert margins == {1.5}
    assert len(_cq_nodes(converted)) == 12


def test_max_pool_kept_when_asked():
    converted = to_cq(ManyReluSpellings(), M, L, max_pool_to_avg=False)
    assert isinstance(converted.get_submodule("max_pool"), nn.MaxPool2d)


def test_input_model_is_not_mutated():
    model = ManyReluSpellings()
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(2, 1, 8, 8)
    expected = model(x)
    converted = to_cq(model, M, L)
    assert isinstance(model.relu, nn.ReLU) and isinstance(model.max_pool, nn.MaxPool2d)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    torch.testing.assert_close(model(x), expected)
    # the copy does not share parameters with the original
    converted.get_submodule("conv1").weight.data.zero_()
    assert model.conv1.weight.abs().sum() > 0

    graph_module = trace(model)
    text = graph_module.code
    to_cq(graph_module, M, L)
    assert graph_module.code == text


def _numpy_cq(values: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(values, 0, M) * L) / L


def test_converted_network_computes_cq_forward_against_numpy_oracle():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    ).eval()
    x = torch.rand(4, 1, 8, 8)
    conv = model[0](x).detach().numpy()
    hidden = _numpy_cq(conv)
    pooled = hidden.reshape(4, 3, 4, 2, 4, 2).mean(axis=(3, 5))
    weight, bias = model[4].weight.detach().numpy(), model[4].bias.detach().numpy()
    expected = pooled.reshape(4, -1) @ weight.T + bias  # the readout's pool is not quantised
    with torch.no_grad():
        got = to_cq(model, M, L)(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pool_followed_by_relu_gets_no_extra_cq_and_readout_pool_stays_linear():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Conv2d(2, 3, 1),
        nn.AdaptiveAvgPool2d(1),  # global pooling is the readout: nothing weighted after it
        nn.Flatten(),
    )
    converted = to_cq(model, M, L)
    assert len(_cq_nodes(converted)) == 1
    x = torch.rand(2, 1, 9, 9)
    with torch.no_grad():
        logits = converted(x)
    assert not torch.allclose(logits * L, (logits * L).round())  # not quantised


def test_untraceable_model_is_reported_clearly():
    from core.errors import UnsupportedModel

    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedModel, match="traced"):
        to_cq(DataDependent(), M, L)


class FunctionalPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.adaptive_max_pool2d(self.conv2(x).relu(), 1)
        return self.fc(x.flatten(1))


def test_functional_max_pools_become_quantised_average_pools():
    model = FunctionalPools().eval()
    converted = to_cq(model, M, L)
    targets = [n.target for n in converted.graph.nodes if n.op == "call_function"]
    assert F.max_pool2d not in targets and F.adaptive_max_pool2d not in targets
    assert F.avg_pool2d in targets and F.adaptive_avg_pool2d in targets
    assert len(_cq_nodes(converted)) == 3  # the global pool before the classifier stays linear
    x = torch.rand(2, 1, 8, 8)
    cq = CQActivation(M, L)
    with torch.no_grad():
        hidden = cq(F.avg_pool2d(cq(model.conv1(x)), 2, 2))
        expected = model.fc(cq(model.conv2(hidden)).mean((2, 3)))
        torch.testing.assert_close(converted(x), expected)


def test_retracing_a_cq_model_keeps_cq_as_single_nodes():
    converted = to_cq(FunctionalPools(), M, L)
    retraced = trace(converted)
    assert len(_cq_nodes(retraced)) == 3
