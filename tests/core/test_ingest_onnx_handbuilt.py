"""Hand-built ONNX graphs (opsets 13 and 21) with ops exporters rarely emit, vs onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

from core.ingest import load_model
from tests.core.ingest_fixtures import (
    assert_matches_onnxruntime,
    function_targets,
    module_types,
    save_graph,
    tensor,
)

OPSETS = [13, 21]
BATCH = 3
rng = np.random.default_rng(0)


def _weights(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _ints(name: str, values: list[int]):
    return tensor(name, np.array(values, dtype=np.int64))


def _reduce_mean(opset: int, source: str, out: str, axes: list[int], keep: int):
    """ReduceMean takes axes as an attribute before opset 18 and as an input from 18 on."""
    if opset < 18:
        return [helper.make_node("ReduceMean", [source], [out], axes=axes, keepdims=keep,
                                 name="mean")], []
    node = helper.make_node("ReduceMean", [source, "mean_axes"], [out], keepdims=keep,
                            name="mean")
    return [node], [_ints("mean_axes", axes)]


@pytest.mark.parametrize("opset", OPSETS)
def test_pad_conv_sub_div_reduce_mean_matmul_add(tmp_path, opset):
    mean_nodes, mean_inits = _reduce_mean(opset, "s2", "r", [2, 3], keep=0)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant", name="pad"),
        helper.make_node("Conv", ["p", "w", "b"], ["c"], pads=[1, 0, 0, 1], name="conv/1"),
        helper.make_node("Sub", ["c", "shift"], ["s"], name="sub"),
        helper.make_node("Div", ["s", "two"], ["d"], name="div"),
        helper.make_node("Sub", ["one", "d"], ["s2"], name="rsub"),
        *mean_nodes,
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "b2"], ["a"], name="fc_bias"),
        helper.make_node("Dropout", ["a"], ["dr"], name="drop"),
        helper.make_node("Identity", ["dr"], ["y"], name="same"),
    ]
    inits = [
        _ints("pads", [0, 0, 1, 0, 0, 0, 0, 2]), tensor("w", _weights(3, 2, 3, 3)),
        tensor("b", _weights(3)), tensor("shift", _weights(1, 3, 1, 1)),
        tensor("two", np.array(2.0, np.float32)), tensor("one", np.array(1.0, np.float32)),
        tensor("w2", _weights(3, 4)), tensor("b2", _weights(4)), *mean_inits,
    ]
    path = save_graph(tmp_path / "m.onnx", nodes, (2, 6, 6), inits, opset)

    loaded = load_model(path)

    assert loaded.opset == opset and loaded.input_shape == (2, 6, 6)
    targets = function_targets(loaded)
    assert F.pad in targets and torch.add not in targets  # the bias Add is fused into fc
    linear = next(m for m in loaded.module.modules() if isinstance(m, nn.Linear))
    assert linear.bias is not None
    mean = next(n for n in loaded.module.graph.nodes if n.target is torch.mean)
    assert mean.kwargs == {"dim": (2, 3), "keepdim": False}
    assert "conv_1" in dict(loaded.module.named_modules())  # named after the ONNX node
    assert_matches_onnxruntime(path, loaded, BATCH)


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_zero_and_minus_one_flatten_gemm_squeeze(tmp_path, opset):
    nodes = [
        helper.make_node("Reshape", ["x", "to_rows"], ["r1"], name="rows"),
        helper.make_node("Reshape", ["r1", "to_3d"], ["r2"], name="cube"),
        helper.make_node("Flatten", ["r2"], ["f"], axis=1, name="flat"),
        helper.make_node("Relu", ["f"], ["h"], name="act"),
        helper.make_node("Gemm", ["h", "gw", "gc"], ["g"], alpha=0.5, beta=2.0, name="gemm"),
        helper.make_node("Unsqueeze", ["g", "axis2"], ["u"], name="unsq"),
        helper.make_node("Squeeze", ["u", "axis2"], ["q"], name="sq"),
        helper.make_node("Softmax", ["q"], ["y"], axis=1, name="prob"),
    ]
    inits = [_ints("to_rows", [0, -1]), _ints("to_3d", [0, 4, -1]),
             tensor("gw", _weights(24, 5)), tensor("gc", _weights(5)), _ints("axis2", [2])]
    path = save_graph(tmp_path / "m.onnx", nodes, (2, 3, 4), inits, opset)

    loaded = load_model(path)

    reshapes = [n.args[1] for n in loaded.module.graph.nodes if n.target is torch.reshape]
    assert reshapes[:2] == [(-1, 24), (-1, 4, 6)]
    assert {nn.Flatten, nn.ReLU, nn.Linear, nn.Softmax} <= module_types(loaded)
    assert_matches_onnxruntime(path, loaded, BATCH)


@pytest.mark.parametrize("opset", OPSETS)
def test_runtime_shape_arithmetic_and_max_min_clamp(tmp_path, opset):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0, name="batch"),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"], name="batch_1d"),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0, name="target"),
        helper.make_node("Cast", ["target"], ["target64"], to=7, name="as_int64"),
        helper.make_node("Reshape", ["x", "target64"], ["flat"], name="view"),
        helper.make_node("Cast", ["flat"], ["flat32"], to=1, name="as_float"),
        helper.make_node("Max", ["flat32", "low"], ["lo"], name="max"),
        helper.make_node("Min", ["lo", "high"], ["y"], name="min"),
    ]
    inits = [tensor("zero", np.array(0, dtype=np.int64)), _ints("axis0", [0]),
             _ints("minus_one", [-1]), tensor("low", np.array(-0.5, np.float32)),
             tensor("high", np.array(0.75, np.float32))]
    path = save_graph(tmp_path / "m.onnx", nodes, (3, 4, 4), inits, opset)

    loaded = load_model(path)

    clamps = [n for n in loaded.module.graph.nodes if n.target is torch.clamp]
    assert len(clamps) == 1 and clamps[0].kwargs == {"min": -0.5, "max": 0.75}
    assert_matches_onnxruntime(path, loaded, BATCH)
    assert_matches_onnxruntime(path, loaded, 1)


@pytest.mark.parametrize("opset", OPSETS)
def test_pooling_variants_and_same_padding(tmp_path, opset):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2],
                         name="same_conv"),
        helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=1, name="maxpool"),
        helper.make_node("AveragePool", ["m"], ["a1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1, name="avg_counting_pad"),
        helper.make_node("AveragePool", ["a1"], ["a2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=0, name="avg_excluding_pad"),
        helper.make_node("AveragePool", ["a2"], ["a3"], kernel_shape=[2, 2],
                         pads=[0, 0, 1, 1], count_include_pad=1, name="avg_asymmetric"),
        helper.make_node("GlobalAveragePool", ["a3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("LogSoftmax", ["f"], ["y"], axis=-1, name="logp"),
    ]
    path = save_graph(tmp_path / "m.onnx", nodes, (2, 11, 11),
                      [tensor("w", _weights(4, 2, 3, 3))], opset)

    loaded = load_model(path)

    assert {nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
            nn.LogSoftmax} <= module_types(loaded)
    assert_matches_onnxruntime(path, loaded, BATCH)


@pytest.mark.parametrize("opset", OPSETS)
def test_conv1d_with_batch_norm(tmp_path, opset):
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2], pads=[1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"],
                         epsilon=1e-3, name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["y"], name="flat"),
    ]
    inits = [tensor("w", _weights(4, 2, 3)), tensor("b", _weights(4)),
             tensor("scale", _weights(4)), tensor("shift", _weights(4)),
             tensor("mean", _weights(4)), tensor("var", np.abs(_weights(4)) + 0.5)]
    path = save_graph(tmp_path / "m.onnx", nodes, (2, 10), inits, opset)

    loaded = load_model(path)

    assert {nn.Conv1d, nn.BatchNorm1d} <= module_types(loaded)
    assert_matches_onnxruntime(path, loaded, BATCH)


def test_fixed_batch_shape_constants_become_dynamic(tmp_path):
    """A model exported with batch 1 and shape constants [1, 3, 4] / [1, -1] runs at batch 4."""
    nodes = [
        helper.make_node("Reshape", ["x", "grid"], ["g"], name="grid"),
        helper.make_node("Mul", ["g", "scale"], ["s"], name="scale"),
        helper.make_node("Reshape", ["s", "flat"], ["y"], name="flat"),
    ]
    inits = [_ints("grid", [1, 3, 4]), _ints("flat", [1, -1]),
             tensor("scale", _weights(1, 1, 4))]
    path = save_graph(tmp_path / "m.onnx", nodes, (12,), inits, 13)
    proto = onnx.load_model_from_string(path.read_bytes())
    proto.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", 1, [1, 12]))
    path.write_bytes(proto.SerializeToString())

    loaded = load_model(path)

    assert_matches_onnxruntime(path, loaded, 4, export_batch=1)


@pytest.mark.parametrize("opset", OPSETS)
def test_constant_first_operands(tmp_path, opset):
    """Exporters also write ``c ⊕ x``: the importer canonicalises to ``x ⊕ c`` and still fuses."""
    nodes = [
        helper.make_node("Mul", ["scale", "x"], ["s"], name="scale"),
        helper.make_node("MatMul", ["s", "w"], ["m"], name="fc"),
        helper.make_node("Add", ["b", "m"], ["a"], name="fc_bias"),
        helper.make_node("Max", ["low", "a"], ["lo"], name="floor_at"),
        helper.make_node("Div", ["two", "lo"], ["y"], name="reciprocal"),
    ]
    inits = [tensor("scale", _weights(6)), tensor("w", _weights(6, 4)), tensor("b", _weights(4)),
             tensor("low", np.array(0.5, np.float32)), tensor("two", np.array(2.0, np.float32))]
    path = save_graph(tmp_path / "m.onnx", nodes, (6,), inits, opset)

    loaded = load_model(path)

    graph = loaded.module.graph
    mul = next(n for n in graph.nodes if n.target is torch.mul)
    assert mul.args[0].op == "placeholder" and mul.args[1].op == "get_attr"
    assert torch.add not in function_targets(loaded)
    clamp = next(n for n in graph.nodes if n.target is torch.clamp)
    assert clamp.kwargs == {"min": 0.5}
    assert_matches_onnxruntime(path, loaded, BATCH)
