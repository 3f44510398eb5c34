"""ONNX external data: the default torch export loads, hostile locations and ranges never read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from core import cli
from core.errors import ModelRejected
from core.ingest import load_model, onnx_external, self_contained_onnx
from tests.core.ingest_fixtures import assert_matches_onnxruntime, tensor

EXPORT_BATCH = 2
WEIGHT_SHAPE = (16, 4)
WEIGHT_BYTES = 16 * 4 * 4


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10)).eval()


@pytest.fixture(scope="module")
def default_export(tmp_path_factory) -> Path:
    """``torch.onnx.export(model, (x,), path)`` with every default: it writes m.onnx.data."""
    path = tmp_path_factory.mktemp("export") / "m.onnx"
    torch.onnx.export(_small_net(), (torch.randn(EXPORT_BATCH, 1, 8, 8),), str(path))
    return path


def test_default_torch_export_with_its_data_file_matches_onnxruntime(default_export):
    assert (default_export.parent / "m.onnx.data").is_file()
    proto = onnx.load(str(default_export), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)

    loaded = load_model(default_export)

    assert loaded.format == "onnx" and loaded.input_shape == (1, 8, 8)
    assert_matches_onnxruntime(default_export, loaded, EXPORT_BATCH, EXPORT_BATCH)


def test_onnx_save_model_with_external_location_matches_onnxruntime(default_export, tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(onnx.load(str(default_export)), str(path), save_as_external_data=True,
                    location="w.bin")  # small tensors stay inline (onnxruntime needs that)
    assert (tmp_path / "w.bin").is_file()

    assert_matches_onnxruntime(path, load_model(path), EXPORT_BATCH, EXPORT_BATCH)


def test_self_contained_copy_loads_without_its_data_file(default_export, tmp_path):
    path = tmp_path / "alone.onnx"
    path.write_bytes(self_contained_onnx(default_export))

    proto = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert_matches_onnxruntime(path, load_model(path), EXPORT_BATCH, EXPORT_BATCH)


def test_cli_inspect_accepts_the_default_export(default_export, capsys):
    assert cli.main(["inspect", str(default_export)]) == 0


def _matmul_with_external_weight(folder: Path) -> tuple[Path, onnx.ModelProto]:
    """``y = x @ w`` saved in ``folder`` with ``w`` in ``w.bin`` beside it, as the onnx package
    writes it; returns the path and the model (external fields unresolved) for editing."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WEIGHT_SHAPE[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WEIGHT_SHAPE[1]])],
        initializer=[tensor("w", np.ones(WEIGHT_SHAPE, np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    return path, onnx.load(str(path), load_external_data=False)


def _with_entries(path: Path, model: onnx.ModelProto, **entries: str) -> Path:
    """Rewrite the weight's external_data entries (``None`` drops one) and save the model."""
    weight = model.graph.initializer[0]
    current = {e.key: e.value for e in weight.external_data} | entries
    weight.ClearField("external_data")
    for key, value in current.items():
        if value is not None:
            weight.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def no_reads(monkeypatch):
    """Fail the test if any external byte is read: refusals must come before reading."""
    def refuse_to_read(plan):
        raise AssertionError(f"read {plan.length} bytes of {plan.path}")
    monkeypatch.setattr(onnx_external, "_read_range", refuse_to_read)


def _refused(path: Path, code: str, **options) -> ModelRejected:
    with pytest.raises(ModelRejected) as caught:
        load_model(path, **options)
    error = caught.value
    assert error.code == code, str(error)
    assert error.details["tensor"] == "w"
    assert "torch.onnx.export(..., external_data=False)" in str(error)
    assert "onnx.save_model(model, path, save_as_external_data=False)" in str(error)
    return error


def test_hand_saved_external_weight_loads(tmp_path):
    path, _ = _matmul_with_external_weight(tmp_path)

    loaded = load_model(path)

    with torch.no_grad():
        assert torch.equal(loaded.module(torch.ones(2, 16)), torch.full((2, 4), 16.0))


@pytest.mark.parametrize("where", ["parent", "absolute", "subfolder"])
def test_location_outside_the_folder_is_refused(tmp_path, no_reads, where):
    path, model = _matmul_with_external_weight(tmp_path / "upload")
    target = {"parent": tmp_path / "w.bin", "absolute": tmp_path / "w.bin",
              "subfolder": tmp_path / "upload" / "sub" / "w.bin"}[where]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((tmp_path / "upload" / "w.bin").read_bytes())
    location = {"parent": "../w.bin", "absolute": str(target), "subfolder": "sub/w.bin"}[where]

    error = _refused(_with_entries(path, model, location=location), "external-data-path")

    assert location in str(error) and "plain file name" in str(error)


@pytest.mark.parametrize("location", ["w.bin\x00.txt", "..", "C:w.bin", "dir\\w.bin"])
def test_odd_location_names_are_refused(tmp_path, no_reads, location):
    path, model = _matmul_with_external_weight(tmp_path)

    _refused(_with_entries(path, model, location=location), "external-data-path")


def test_symlinked_data_file_is_not_followed(tmp_path, no_reads):
    path, model = _matmul_with_external_weight(tmp_path)
    (tmp_path / "w.bin").unlink()
    (tmp_path / "w.bin").symlink_to("/etc/passwd")

    error = _refused(_with_entries(path, model, offset="0", length=None), "external-data-path")

    assert "symbolic link" in str(error)


def test_missing_data_file_names_it(tmp_path, no_reads):
    path, _ = _matmul_with_external_weight(tmp_path)
    (tmp_path / "w.bin").unlink()

    error = _refused(path, "external-data-missing")

    assert "'w.bin'" in str(error) and "missing" in str(error)


@pytest.mark.parametrize(("entries", "code"), [
    ({"offset": "200", "length": str(WEIGHT_BYTES)}, "external-data-range"),
    ({"offset": str(WEIGHT_BYTES + 1), "length": None}, "external-data-range"),
    ({"offset": "0", "length": str(WEIGHT_BYTES // 2)}, "external-data-length"),
    ({"offset": "64", "length": None}, "external-data-length"),
    ({"offset": "-1"}, "external-data-malformed"),
    ({"length": "1e3"}, "external-data-malformed"),
    ({"sneaky": "1"}, "external-data-malformed"),
])
def test_bad_ranges_are_refused_before_reading(tmp_path, no_reads, entries, code):
    path, model = _matmul_with_external_weight(tmp_path)

    _refused(_with_entries(path, model, **entries), code)


def test_range_past_the_end_reports_the_file_size(tmp_path, no_reads):
    path, model = _matmul_with_external_weight(tmp_path)

    error = _refused(_with_entries(path, model, offset="200", length=str(WEIGHT_BYTES)),
                     "external-data-range")

    assert f"holds {WEIGHT_BYTES} bytes" in str(error)


def test_huge_external_data_over_the_cap_is_refused_unread(tmp_path, no_reads):
    path, model = _matmul_with_external_weight(tmp_path)
    huge = 1 << 30  # a sparse file: its size is real, its blocks are not
    os.truncate(tmp_path / "w.bin", huge)
    model.graph.initializer[0].dims[:] = [16, huge // 64]

    with pytest.raises(ModelRejected) as caught:
        load_model(_with_entries(path, model, length=str(huge)))

    assert caught.value.code == "too-large" and "external data" in str(caught.value)


def test_the_cap_counts_every_external_tensor(tmp_path, no_reads):
    path, _ = _matmul_with_external_weight(tmp_path)

    with pytest.raises(ModelRejected) as caught:
        load_model(path, max_bytes=WEIGHT_BYTES - 1)

    assert caught.value.code == "too-large" and "external data" in str(caught.value)
