"""Every hostile or malformed upload is refused with its own code, and nothing in it runs."""

from __future__ import annotations

import json
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file
from torch import nn

from core.errors import ModelRejected
from core.ingest import load_model, sniff_format, state_dict_to_safetensors
from tests.core.ingest_fixtures import save_graph, tensor


class CreatesMarker:
    """Unpickling this object opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _rejected(path: Path, arch: str | None = "mlp-digits", **options) -> ModelRejected:
    with pytest.raises(ModelRejected) as caught:
        load_model(path, arch, **options)
    return caught.value


def _relu_model(opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize(("suffix", "protocol"),
                         [(".pt", 2), (".pth", 4), (".onnx", 5), (".safetensors", 3)])
def test_raw_pickle_is_refused_under_any_extension_without_running(tmp_path, suffix, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(CreatesMarker(marker), protocol=protocol))

    error = _rejected(path)

    assert error.code == "pickle" and "pickle" in str(error)
    assert not marker.exists()


def test_torch_save_of_code_carrying_object_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save({"weight": CreatesMarker(marker)}, path)

    error = _rejected(path)
    with pytest.raises(ModelRejected):
        state_dict_to_safetensors(path, tmp_path / "out.safetensors")

    assert error.code == "pickled-objects"
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_pickled_module_is_refused_with_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path)

    error = _rejected(path)

    assert error.code == "pickled-objects"
    assert "contains pickled Python objects, not just tensors" in str(error)
    assert "save model.state_dict()" in str(error)


def test_torchscript_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)

    assert _rejected(path).code == "torchscript"


def test_torch_export_archive_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    program = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
    torch.export.save(program, path)

    error = _rejected(path)

    assert error.code == "torch-export" and "torch.export" in str(error)


def test_onnx_with_missing_external_data_is_refused(tmp_path):
    model = _relu_model()
    model.graph.initializer.append(tensor("unused", np.ones((4, 4), np.float32)))
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    (tmp_path / "weights.bin").unlink()  # more hostile cases: test_ingest_external_data.py

    error = _rejected(path)

    assert error.code == "external-data-missing" and "'weights.bin'" in str(error)


@pytest.mark.parametrize("where", ["node", "opset_import"])
def test_onnx_with_custom_domain_is_refused(tmp_path, where):
    model = _relu_model()
    model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    if where == "node":
        model.graph.node[0].domain = "com.example.evil"

    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    error = _rejected(path)

    assert error.code == "custom-domain" and "com.example.evil" in str(error)


@pytest.mark.parametrize("opset", [12, 22])
def test_onnx_opset_outside_supported_range_is_refused(tmp_path, opset):
    path = tmp_path / "model.onnx"
    path.write_bytes(_relu_model(opset).SerializeToString())

    assert _rejected(path).code == "unsupported-opset"


def test_unsupported_ops_are_all_listed(tmp_path):
    nodes = [helper.make_node("Tanh", ["x"], ["t"], name="squash"),
             helper.make_node("Relu", ["t"], ["r"], name="fine"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="gate")]
    path = save_graph(tmp_path / "model.onnx", nodes, (4,), [], 17)

    error = _rejected(path)

    assert error.code == "unsupported-ops"
    assert "Tanh (squash)" in str(error) and "Sigmoid (gate)" in str(error)
    assert error.details["nodes"] == ["Tanh (squash)", "Sigmoid (gate)"]


def test_supported_op_used_unsupportedly_names_the_node(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "x"], ["y"], name="square")]
    path = save_graph(tmp_path / "model.onnx", nodes, (4, 4), [], 17, output_rank=3)

    error = _rejected(path)

    assert error.code == "unsupported-ops" and "MatMul (square)" in str(error)


def test_every_offending_node_is_reported_at_once(tmp_path):
    nodes = [helper.make_node("Tanh", ["x"], ["t"], name="squash"),
             helper.make_node("MatMul", ["x", "x"], ["m"], name="square"),
             helper.make_node("Add", ["t", "m"], ["y"], name="downstream")]
    path = save_graph(tmp_path / "model.onnx", nodes, (4, 4), [], 17, output_rank=3)

    error = _rejected(path)

    assert [label.split(":")[0] for label in error.details["nodes"]] == [
        "Tanh (squash)", "MatMul (square)"]


def test_reshape_that_mixes_samples_is_refused(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="everything")]
    inits = [tensor("shape", np.array([-1], np.int64))]
    path = save_graph(tmp_path / "model.onnx", nodes, (4,), inits, 17, output_rank=1)

    error = _rejected(path)

    assert error.code == "unsupported-ops" and "Reshape (everything)" in str(error)


def _onnx_file(path: Path) -> Path:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    return save_graph(path, nodes, (64,), [tensor("w", np.ones((64, 64), np.float32))], 17)


def _safetensors_file(path: Path) -> Path:
    save_file({"w": torch.ones(64, 64)}, str(path))
    return path


def _state_dict_file(path: Path) -> Path:
    torch.save({"w": torch.ones(64, 64)}, path)
    return path


@pytest.mark.parametrize("make", [_onnx_file, _safetensors_file, _state_dict_file])
def test_truncated_files_are_refused(tmp_path, make):
    path = make(tmp_path / "model")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    assert _rejected(path).code == "truncated"


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")

    assert _rejected(path).code == "empty-file"


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x17" + np.random.default_rng(0).bytes(4096))

    assert _rejected(path).code == "unrecognised-format"


def test_onnx_initializer_declaring_huge_dims_is_refused(tmp_path):
    model = _relu_model()
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20],
                       raw_data=b"\0\0\0\0")
    model.graph.initializer.append(huge)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())

    assert _rejected(path).code == "too-large"


def test_safetensors_header_declaring_huge_tensor_is_refused(tmp_path):
    nbytes = 4 << 40
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30, 1 << 10],
                               "data_offsets": [0, nbytes]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)

    assert _rejected(path).code == "too-large"


def _zip_with_entry(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("model/data/0", b"\0" * size)
    return path


def test_zip_bomb_by_compression_ratio_is_refused(tmp_path):
    path = _zip_with_entry(tmp_path / "model.pt", 4 << 20)

    error = _rejected(path)

    assert error.code == "zip-bomb" and "compressed" in str(error)


def test_zip_bomb_by_expanded_size_is_refused(tmp_path):
    path = _zip_with_entry(tmp_path / "model.pt", 2 << 20)

    error = _rejected(path, max_bytes=1 << 20)

    assert error.code == "zip-bomb" and "expands" in str(error)


def test_nested_state_dict_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)

    error = _rejected(path)

    assert error.code == "not-a-state-dict" and "state_dict" in str(error)


def test_file_over_the_size_cap_is_refused(tmp_path):
    path = _onnx_file(tmp_path / "model.onnx")

    assert _rejected(path, max_bytes=1024).code == "too-large"


def test_sniff_recognises_the_three_accepted_formats(tmp_path):
    assert sniff_format(_onnx_file(tmp_path / "a")) == "onnx"
    assert sniff_format(_safetensors_file(tmp_path / "b")) == "safetensors"
    assert sniff_format(_state_dict_file(tmp_path / "c")) == "state_dict"
