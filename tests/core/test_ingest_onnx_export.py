"""Models exported by torch.onnx (dynamo and legacy exporters) import and match onnxruntime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core import zoo
from core.ingest import load_model
from tests.core.ingest_fixtures import (
    assert_matches_onnxruntime,
    export_onnx,
    function_targets,
    module_types,
    onnx_op_types,
)

EXPORT_BATCH = 2
TEST_BATCH = 6  # differs from the export batch: the batch dimension must stay dynamic
EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="legacy")]


class ConvNet(nn.Module):
    """Conv+BN (unfused), residual add, max/avg pooling, CQ activation, concat, view, Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 3 * 3, 10)
        with torch.no_grad():  # non-trivial statistics, so an ignored BN would show
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv1(x)))
        y = y + self.conv2(y)
        y = nn.functional.max_pool2d(y, 2)
        y = self.pool(y)
        y = torch.floor(torch.clamp(y, 0.0, 1.5) * 4) / 4  # CQ activation
        y = torch.cat([y, torch.relu(y - 0.5)], 1)
        y = y.view(y.size(0), -1)
        return torch.softmax(self.fc(y), -1)


class GlobalPoolNet(nn.Module):
    """ReLU6 / clamp activations, global average pooling, nn.Flatten, log-softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.act = nn.ReLU6()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gap(self.act(self.conv(x)))
        return torch.log_softmax(self.fc(torch.clamp(self.flat(y), -1.0, 2.0)), dim=1)


@pytest.fixture(scope="module")
def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet().eval()


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_conv_net_with_unfused_batch_norm_matches_onnxruntime(conv_net, tmp_path, dynamo):
    sample = torch.randn(EXPORT_BATCH, 1, 12, 12)
    path = export_onnx(conv_net, sample, tmp_path / "m.onnx", dynamo=dynamo, keep_batch_norm=True)
    assert "BatchNormalization" in onnx_op_types(path)

    loaded = load_model(path)

    assert loaded.format == "onnx" and loaded.input_shape == (1, 12, 12)
    assert 13 <= loaded.opset <= 21
    assert {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear,
            nn.Softmax} <= module_types(loaded)
    assert {torch.add, torch.cat, torch.reshape} <= set(function_targets(loaded))
    assert not loaded.module.training
    assert_matches_onnxruntime(path, loaded, TEST_BATCH, export_batch=EXPORT_BATCH)


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_cq_activation_stays_clamp_mul_floor_div(conv_net, tmp_path, dynamo):
    path = export_onnx(conv_net, torch.randn(EXPORT_BATCH, 1, 12, 12), tmp_path / "m.onnx",
                       dynamo=dynamo)
    loaded = load_model(path)

    clamp = next(n for n in loaded.module.graph.nodes if n.target is torch.clamp)
    chain = [clamp, *_single_user_chain(clamp, 3)]
    assert [n.target for n in chain] == [torch.clamp, torch.mul, torch.floor, torch.div]
    assert clamp.kwargs == {"min": 0.0, "max": 1.5}
    assert chain[1].args[1] == 4.0 and chain[3].args[1] == 4.0
    assert_matches_onnxruntime(path, loaded, TEST_BATCH, export_batch=EXPORT_BATCH)


def _single_user_chain(node, length):
    for _ in range(length):
        node = next(iter(node.users))
        yield node


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_relu6_global_pool_flatten_log_softmax(tmp_path, dynamo):
    torch.manual_seed(1)
    path = export_onnx(GlobalPoolNet(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx",
                       dynamo=dynamo)

    loaded = load_model(path)

    assert {nn.Conv2d, nn.Linear, nn.LogSoftmax} <= module_types(loaded)
    assert torch.clamp in function_targets(loaded)
    if "GlobalAveragePool" in onnx_op_types(path):  # legacy exporter
        pool = next(m for m in loaded.module.modules() if isinstance(m, nn.AdaptiveAvgPool2d))
        assert pool.output_size == 1
    else:  # the dynamo exporter writes ReduceMean over the spatial axes
        mean = next(n for n in loaded.module.graph.nodes if n.target is torch.mean)
        assert mean.kwargs == {"dim": (2, 3), "keepdim": True}
    assert_matches_onnxruntime(path, loaded, TEST_BATCH, export_batch=1)


def test_legacy_export_with_runtime_shape_ops_keeps_batch_dynamic(conv_net, tmp_path):
    """``x.view(x.size(0), -1)`` exported as Shape → Gather → Unsqueeze → Concat → Reshape."""
    path = export_onnx(conv_net, torch.randn(EXPORT_BATCH, 1, 12, 12), tmp_path / "m.onnx",
                       dynamo=False, do_constant_folding=False, input_names=["x"],
                       dynamic_axes={"x": {0: "n"}})
    assert {"Shape", "Gather", "Unsqueeze"} <= set(onnx_op_types(path))

    loaded = load_model(path)

    assert_matches_onnxruntime(path, loaded, TEST_BATCH)
    assert_matches_onnxruntime(path, loaded, 1)


class BiasFreeNet(nn.Module):
    """Bias-free conv and linear (MatMul in the legacy export), BatchNorm1d, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.fc = nn.Linear(4 * 6 * 6, 8, bias=False)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = self.drop(torch.relu(self.bn(self.fc(y.view(y.size(0), -1)))))
        return self.head(torch.flatten(y, 1))


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_bias_free_layers_and_batch_norm_1d_with_dynamic_batch_export(tmp_path, dynamo):
    torch.manual_seed(2)
    dynamic = ({"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo else
               {"input_names": ["x"], "dynamic_axes": {"x": {0: "n"}}})
    path = export_onnx(BiasFreeNet(), torch.randn(EXPORT_BATCH, 1, 8, 8), tmp_path / "m.onnx",
                       dynamo=dynamo, keep_batch_norm=True, **dynamic)

    loaded = load_model(path)

    assert nn.BatchNorm1d in module_types(loaded)
    assert_matches_onnxruntime(path, loaded, TEST_BATCH)


ZOO_QUICK = ["lenet5", "resnet20"]


def _zoo_round_trip(tmp_path, name: str, dynamo: bool) -> None:
    torch.manual_seed(3)
    model = zoo.build(name).eval()
    sample = torch.randn(EXPORT_BATCH, *zoo.info(name).input_shape)
    path = export_onnx(model, sample, tmp_path / "m.onnx", dynamo=dynamo, keep_batch_norm=True)

    loaded = load_model(path)

    assert loaded.input_shape == tuple(zoo.info(name).input_shape)
    assert_matches_onnxruntime(path, loaded, 4, export_batch=EXPORT_BATCH)


@pytest.mark.parametrize("name", ZOO_QUICK)
def test_zoo_architectures_round_trip_through_legacy_export(tmp_path, name):
    _zoo_round_trip(tmp_path, name, dynamo=False)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_architecture_round_trips_through_both_exporters(tmp_path, name, dynamo):
    _zoo_round_trip(tmp_path, name, dynamo)
