"""Exporting a CQ model: ONNX with the Clip → Mul → Floor → Div chain, and safetensors."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from core.train.export import export_onnx, export_safetensors
from core.train.rewrite import to_cq

CQ_CHAIN = ["Clip", "Mul", "Floor", "Div"]


def _cq_model() -> nn.Module:
    torch.manual_seed(0)
    relu = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    relu[1].running_mean.uniform_(-0.2, 0.2)
    return to_cq(relu, 0.8, 10).eval()


def _op_chains(graph: onnx.GraphProto) -> int:
    """How many times Clip → Mul → Floor → Div appears, ignoring Constant nodes."""
    ops = [node.op_type for node in graph.node if node.op_type != "Constant"]
    return sum(ops[i : i + 4] == CQ_CHAIN for i in range(len(ops)))


# PyTorch's default (torch.export based) exporter takes 5-20 s on 2 cores; the TorchScript
# one well under a second.  Both must give the same chain.
@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False])
def test_onnx_export_has_cq_chain_and_matches_onnxruntime(tmp_path, dynamo):
    model = _cq_model()
    path = export_onnx(model, (1, 1, 8, 8), tmp_path / "cq.onnx", dynamo=dynamo)
    proto = onnx.load(path)
    # after the first conv (BN folded or not), after the pool, after the second conv
    assert _op_chains(proto.graph) == 3
    session = onnxruntime.InferenceSession(str(path))
    x = torch.rand(5, 1, 8, 8)  # batch differs from the export example: dynamic batch
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cq.onnx"]  # no temp files left


def test_export_of_a_training_mode_model_still_uses_plain_ops(tmp_path):
    model = _cq_model().train()
    path = export_onnx(model, (1, 1, 8, 8), tmp_path / "cq.onnx", dynamo=False)
    assert _op_chains(onnx.load(path).graph) == 3


def test_safetensors_round_trip_restores_the_model(tmp_path):
    model = _cq_model()
    path = export_safetensors(model, tmp_path / "cq.safetensors", metadata={"levels": "10"})
    tensors = load_file(path)
    assert set(tensors) == set(model.state_dict())
    fresh = _cq_model()
    for parameter in fresh.parameters():
        parameter.data.zero_()
    fresh.load_state_dict(tensors)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cq.safetensors"]
