"""Networks as users write them, exported by both torch.onnx exporters: NHWC inputs, F.pad,
activations that cannot spike, MobileNetV2/Inception-style blocks and log-softmax heads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from core.errors import InvalidSpec, ModelRejected, UnsupportedModel
from core.graph import canonicalize, preflight, require_convertible, trace
from core.graph.input_layout import adapt_input_layout
from core.ingest import load_model
from tests.battery.models import InceptionStyle, LogSoftmaxNet, MobileNetV2Style, PaddedNet
from tests.core.ingest_fixtures import (
    TOLERANCE,
    assert_matches_onnxruntime,
    export_onnx,
    module_types,
    onnx_op_types,
    onnxruntime_outputs,
    save_graph,
    tensor,
)

EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="legacy")]
DIGITS = (1, 8, 8)
NHWC = (8, 8, 1)


def _dynamic(dynamo: bool) -> dict:
    """Export options that keep the batch dimension symbolic."""
    if dynamo:
        return {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
    return {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}}


# ── 1. NHWC input permuted to NCHW ───────────────────────────────────────────────────────

class ChannelsLastNet(nn.Module):
    """Takes [N, H, W, C] and permutes it first (``perm`` can be made to misbehave)."""

    def __init__(self, perm: tuple[int, ...] = (0, 3, 1, 2)) -> None:
        super().__init__()
        self.perm = perm
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(*self.perm)
        x = torch.relu(self.conv(x))
        return self.fc(x.reshape(x.size(0), -1))


def _export_nhwc(tmp_path, dynamo: bool, perm=(0, 3, 1, 2), **options):
    torch.manual_seed(0)
    return export_onnx(ChannelsLastNet(perm), torch.randn(2, *NHWC), tmp_path / "nhwc.onnx",
                       dynamo=dynamo, **options)


@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_nhwc_model_takes_nchw_samples_after_its_permute_is_removed(tmp_path, dynamo, dynamic):
    path = _export_nhwc(tmp_path, dynamo, **(_dynamic(dynamo) if dynamic else {}))
    assert "Transpose" in onnx_op_types(path)
    loaded = load_model(path)
    assert loaded.input_shape == NHWC

    layout = adapt_input_layout(loaded.module, loaded.input_shape, DIGITS, "digits")

    x = np.random.default_rng(0).standard_normal((2, *DIGITS)).astype(np.float32)
    expected = onnxruntime_outputs(path, np.ascontiguousarray(x.transpose(0, 2, 3, 1)), 2)
    with torch.no_grad():
        actual = layout.module(torch.from_numpy(x)).numpy()
    assert np.abs(actual - expected).max() <= TOLERANCE
    assert [v.status for v in layout.removed] == ["removed"]
    assert "[0, 3, 1, 2]" in layout.removed[0].detail and "digits" in layout.removed[0].detail
    assert torch.permute in [n.target for n in loaded.module.graph.nodes]  # caller's is intact


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_preflight_reports_the_input_transpose(tmp_path, dynamo):
    loaded = load_model(_export_nhwc(tmp_path, dynamo))
    inspected = preflight(canonicalize(loaded.module), fmt="onnx", input_shape=NHWC)
    layout = adapt_input_layout(loaded.module, NHWC, DIGITS, "digits")
    converted = preflight(canonicalize(layout.module), fmt="onnx", input_shape=DIGITS,
                          removed=layout.removed)

    before = inspected.nodes[0]
    assert before.status == "passed-through" and "input layout permute" in before.detail
    assert inspected.convertible
    after = converted.nodes[0]
    assert (after.name, after.status) == (before.name, "removed")
    assert converted.convertible and converted.input_shape == list(DIGITS)
    assert all(v.name != before.name for v in converted.nodes[1:])


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_permute_that_also_transposes_the_image_is_refused(tmp_path, dynamo):
    loaded = load_model(_export_nhwc(tmp_path, dynamo, perm=(0, 3, 2, 1)))

    with pytest.raises(InvalidSpec, match=r"\[8, 8, 1\].*\[1, 8, 8\].*spatial axes"):
        adapt_input_layout(loaded.module, loaded.input_shape, DIGITS, "digits")


def test_traced_transpose_of_the_input_is_understood():
    """A traced ``x.transpose(1, 3)`` is permute [0, 3, 2, 1]: it swaps H and W too."""

    class Swapped(nn.Module):
        def forward(self, x):
            return torch.relu(x.transpose(1, 3)).flatten(1)

    with pytest.raises(InvalidSpec, match=r"\[0, 3, 2, 1\].*spatial axes"):
        adapt_input_layout(trace(Swapped()), NHWC, DIGITS)


def test_traced_permute_method_is_removed():
    model = ChannelsLastNet().eval()

    layout = adapt_input_layout(trace(model), NHWC, DIGITS)

    x = torch.randn(3, *DIGITS)
    with torch.no_grad():
        assert torch.allclose(layout.module(x), model(x.permute(0, 2, 3, 1)), atol=TOLERANCE)
    assert "permute" not in [n.target for n in layout.module.graph.nodes]


def test_matching_shapes_leave_the_model_alone():
    gm = trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))

    layout = adapt_input_layout(gm, DIGITS, DIGITS)

    assert layout.module is gm and layout.removed == []


@pytest.mark.parametrize("model_shape, match", [
    ((1, 28, 28), r"\[1, 28, 28\] but dataset 'digits' has samples of shape \[1, 8, 8\]$"),
    (NHWC, r"not read by a single permute/transpose"),
])
def test_shapes_that_no_permute_reconciles_are_refused(model_shape, match):
    gm = trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))

    with pytest.raises(InvalidSpec, match=match):
        adapt_input_layout(gm, model_shape, DIGITS, "digits")


# ── 2. F.pad before a conv (legacy: ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast) ──
# PaddedNet: tests/battery/models.py

PAD_EXPORTS = [
    pytest.param(True, {}, id="dynamo"),
    pytest.param(False, {"opset_version": 13}, id="legacy13"),
    pytest.param(False, {"opset_version": 17}, id="legacy17"),
    pytest.param(False, {"opset_version": 17, "do_constant_folding": False}, id="legacy17-raw"),
    pytest.param(False, {"opset_version": 13, **_dynamic(False)}, id="legacy13-dynamic"),
]


@pytest.mark.parametrize("dynamo, options", PAD_EXPORTS)
def test_functional_pad_imports_and_matches_onnxruntime(tmp_path, dynamo, options):
    torch.manual_seed(1)
    path = export_onnx(PaddedNet(), torch.randn(2, *DIGITS), tmp_path / "pad.onnx",
                       dynamo=dynamo, **options)
    if not dynamo:
        assert {"ConstantOfShape", "Pad"} <= set(onnx_op_types(path))

    loaded = load_model(path)

    dynamic = "dynamic_axes" in options
    assert_matches_onnxruntime(path, loaded, 4, export_batch=None if dynamic else 2)
    assert preflight(canonicalize(loaded.module), fmt="onnx", input_shape=DIGITS).convertible


def _ints(name: str, values: list[int]) -> TensorProto:
    return tensor(name, np.array(values, dtype=np.int64))


def _fill(name: str, shape: str, value: int) -> onnx.NodeProto:
    return helper.make_node("ConstantOfShape", [shape], [name], name=name,
                            value=helper.make_tensor("v", TensorProto.INT64, [1], [value]))


@pytest.mark.parametrize("opset", [13, 21])
def test_pads_computed_by_range_where_and_arithmetic_are_folded(tmp_path, opset):
    """pads = [0, 0, 1, 1, 0, 0, 1, 1] built from Range, Greater, Where, Equal, Not, Mul, Sub."""
    nodes = [
        helper.make_node("Range", ["zero", "four", "one"], ["r"], name="range"),
        helper.make_node("Greater", ["r", "one"], ["spatial"], name="greater"),
        _fill("ones", "four_shape", 1), _fill("zeros", "four_shape", 0),
        helper.make_node("Where", ["spatial", "ones", "zeros"], ["half"], name="where"),
        helper.make_node("Equal", ["half", "zero"], ["unpadded"], name="equal"),
        helper.make_node("Not", ["unpadded"], ["padded"], name="not"),
        helper.make_node("Cast", ["padded"], ["half2"], to=TensorProto.INT64, name="cast"),
        helper.make_node("Concat", ["half2", "half2"], ["pads0"], axis=0, name="concat"),
        helper.make_node("Mul", ["pads0", "two"], ["twice"], name="mul"),
        helper.make_node("Sub", ["twice", "pads0"], ["pads"], name="sub"),
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant", name="pad"),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
    ]
    scalars = {"zero": 0, "one": 1, "two": 2, "four": 4}
    inits = [*(tensor(k, np.array(v, np.int64)) for k, v in scalars.items()),
             _ints("four_shape", [4])]
    path = save_graph(tmp_path / "m.onnx", nodes, (2, 5, 5), inits, opset, output_rank=4)

    loaded = load_model(path)

    assert F.pad in [n.target for n in loaded.module.graph.nodes]
    assert_matches_onnxruntime(path, loaded, 3)


def test_constant_of_shape_over_the_memory_cap_is_refused_before_allocating(tmp_path):
    nodes = [_fill("huge", "shape", 0),
             helper.make_node("Reshape", ["x", "shape2"], ["y"], name="same")]
    inits = [_ints("shape", [1 << 20, 1 << 20]), _ints("shape2", [-1, 4])]
    path = save_graph(tmp_path / "m.onnx", nodes, (4,), inits, 17)

    with pytest.raises(ModelRejected) as refused:
        load_model(path, max_bytes=1 << 20)

    assert refused.value.code == "folding-too-large"
    assert "ConstantOfShape (huge)" in str(refused.value)


# ── 3. Activations that no spiking neuron represents ─────────────────────────────────────

ACTIVATIONS = {  # PyTorch layer → the ONNX ops the two exporters write for it
    "GELU": (nn.GELU, {"Gelu", "Erf"}),
    "SiLU": (nn.SiLU, {"Sigmoid"}),
    "LeakyReLU": (nn.LeakyReLU, {"LeakyRelu"}),
    "Sigmoid": (nn.Sigmoid, {"Sigmoid"}),
    "Tanh": (nn.Tanh, {"Tanh"}),
    "ELU": (nn.ELU, {"Elu"}),
    "Softplus": (nn.Softplus, {"Softplus"}),
    "Hardswish": (nn.Hardswish, {"HardSwish", "HardSigmoid"}),
}
ACTIVATION_EXPORTS = [pytest.param(True, {}, id="dynamo"),
                      pytest.param(False, {"opset_version": 13}, id="legacy13"),
                      pytest.param(False, {"opset_version": 17}, id="legacy17")]
ADVICE = "with ReLU (or ReLU6 / clamp(0, m)) and fine-tune"


class TwoActivations(nn.Module):
    """conv → first → conv → second → linear: two offending nodes, one after the other."""

    def __init__(self, first: type[nn.Module], second: type[nn.Module]) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 4, 3, padding=1), first()
        self.conv2, self.act2 = nn.Conv2d(4, 4, 3), second()
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.view(x.size(0), -1))


def _refusal(tmp_path, model: nn.Module, dynamo: bool, options: dict) -> tuple[str, list[str]]:
    """The refusal message for ``model`` and the ONNX node names of its activations."""
    torch.manual_seed(2)
    path = export_onnx(model, torch.randn(2, *DIGITS), tmp_path / "act.onnx", dynamo=dynamo,
                       **options)
    offending = {op for _, ops in ACTIVATIONS.values() for op in ops}
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in offending]
    with pytest.raises((ModelRejected, UnsupportedModel)) as refused:
        loaded = load_model(path)
        require_convertible(preflight(canonicalize(loaded.module), fmt="onnx",
                                      input_shape=loaded.input_shape))
    return str(refused.value), names


@pytest.mark.parametrize("dynamo, options", ACTIVATION_EXPORTS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_each_offending_activation_is_named_with_advice(tmp_path, activation, dynamo, options):
    layer, _ = ACTIVATIONS[activation]

    message, names = _refusal(tmp_path, TwoActivations(layer, layer), dynamo, options)

    assert len(names) == 2
    assert all(f"({name})" in message for name in names), (names, message)
    assert ADVICE in message and activation in message


@pytest.mark.parametrize("dynamo, options", ACTIVATION_EXPORTS)
def test_two_different_activations_are_both_named(tmp_path, dynamo, options):
    message, names = _refusal(tmp_path, TwoActivations(nn.GELU, nn.SiLU), dynamo, options)

    assert len(names) == 2 and all(f"({name})" in message for name in names)
    assert "GELU" in message and "SiLU" in message and ADVICE in message


def test_traced_model_activations_are_refused_by_preflight_with_advice():
    model = TwoActivations(nn.GELU, nn.LeakyReLU).eval()

    with pytest.raises(UnsupportedModel) as refused:
        require_convertible(preflight(canonicalize(model), fmt="module", input_shape=DIGITS))

    message = str(refused.value)
    assert "GELU (act1)" in message and "LeakyReLU (act2)" in message
    assert "replace GELU/LeakyReLU " + ADVICE in message


# ── 4. MobileNetV2 / Inception-style blocks and log-softmax heads (tests/battery/models) ──

USER_MODELS = {"mobilenet": MobileNetV2Style, "inception": InceptionStyle,
               "log_softmax": LogSoftmaxNet}
USER_EXPORTS = [
    pytest.param(True, {}, id="dynamo-batch1"),
    pytest.param(True, _dynamic(True), id="dynamo-dynamic"),
    *(pytest.param(False, options, id=f"legacy{opset}-{label}")
      for opset in (13, 17)
      for label, options in (
          ("batch1", {"opset_version": opset}),
          ("dynamic", {"opset_version": opset, **_dynamic(False)}),
          ("initializers-as-inputs", {"opset_version": opset,
                                      "keep_initializers_as_inputs": True}))),
]


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a BatchNorm imported wrongly would show."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
    return model.eval()


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _structure_is_kept(name: str, loaded) -> None:
    """The feature each model exists to exercise survives the import."""
    modules = list(loaded.module.modules())
    if name == "mobilenet":
        assert any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in modules)
    elif name == "inception":
        pool = next(m for m in modules if isinstance(m, nn.MaxPool2d))
        assert [_pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)] == [
            (3, 3), (1, 1), (1, 1)]
        assert torch.cat in [n.target for n in loaded.module.graph.nodes]
    else:
        assert nn.LogSoftmax in module_types(loaded)


@pytest.mark.parametrize("dynamo, options", USER_EXPORTS)
@pytest.mark.parametrize("name", list(USER_MODELS))
def test_user_style_networks_import_and_match_onnxruntime(tmp_path, name, dynamo, options):
    torch.manual_seed(3)
    model = _randomise_batch_norms(USER_MODELS[name]())
    path = export_onnx(model, torch.randn(1, *DIGITS), tmp_path / "m.onnx", dynamo=dynamo,
                       **options)

    loaded = load_model(path)

    assert loaded.input_shape == DIGITS
    _structure_is_kept(name, loaded)
    dynamic = "dynamic_axes" in options or "dynamic_shapes" in options
    assert_matches_onnxruntime(path, loaded, 5, export_batch=None if dynamic else 1)
    report = preflight(canonicalize(loaded.module), fmt="onnx", input_shape=DIGITS)
    assert report.convertible, report.problems
