"""JobSpec is strict and bounded at the boundary, and a report names no server path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.spec import MAX_SEED, METHODS, JobSpec


def tiny_onnx_bytes() -> bytes:
    """Flatten → Gemm → ReLU → Gemm for 1×8×8 inputs, random weights, built by hand (no
    training, no exporter): enough for pre-flight and a short pipeline run."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(array.astype(np.float32), name) for name, array in (
        ("w1", rng.normal(size=(64, 16))), ("b1", np.zeros(16)),
        ("w2", rng.normal(size=(16, 10))), ("b2", np.zeros(10)))]
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1, name="flat"),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _errors(**fields) -> list[dict]:
    with pytest.raises(ValidationError) as refused:
        JobSpec(model_path=Path("m.onnx"), **fields)
    return refused.value.errors()


@pytest.mark.parametrize(
    ("fields", "loc", "why"),
    [({"timesteps": True}, ("timesteps",), "valid integer"),
     ({"calib_samples": "100"}, ("calib_samples",), "valid integer"),
     ({"eval_samples": 10**30}, ("eval_samples",), "less than or equal"),
     ({"seed": MAX_SEED + 1}, ("seed",), "less than or equal"),
     ({"percentile": float("nan")}, ("percentile",), "finite"),
     ({"mean": [float("nan")], "std": [1.0]}, ("mean", 0), "finite"),
     ({"mean": [1.0], "std": [True]}, ("std", 0), "valid number"),
     ({"std": [1.0] * 4097, "mean": [0.0] * 4097}, ("std",), "at most 4096"),
     ({"methods": list(METHODS) * 2}, ("methods",), f"at most {len(METHODS)}"),
     ({"arch": "mlp\x00"}, ("arch",), "control characters"),
     ({"arch": "a" * 65}, ("arch",), "at most 64"),
     ({"dataset": "digits\n"}, ("dataset",), "control characters"),
     ({"data_dir": Path("/data\x00/x")}, ("data_dir",), "NUL"),
     ({"cq": {"keep_batchnorm": 0}}, ("cq", "keep_batchnorm"), "valid boolean"),
     ({"cq": {"clamp_max": float("inf")}}, ("cq", "clamp_max"), "finite"),
     ({"cq": {"ctt_batches": 20.0}}, ("cq", "ctt_batches"), "valid integer")],
)
def test_wrong_types_and_out_of_bounds_values_name_the_field(fields, loc, why):
    errors = _errors(**fields)
    matching = [error for error in errors if error["loc"] == loc]
    assert matching and why in matching[0]["msg"], errors


def test_valid_configurations_still_validate():
    spec = JobSpec(model_path="m.onnx", dataset="imagefolder:flowers", data_dir="/data",
                   methods=["robust-norm", "cq-if"], timesteps=16, batch_size=50,
                   calib_samples=200, eval_samples=100, seed=MAX_SEED, device="cpu",
                   percentile=99, mean=[0, 0.5], std=[1, 0.25], memory_budget_mb=256,
                   cq={"levels": 4, "clamp_max": 1, "augment": True, "learning_rate": 0.01})
    assert spec.model_path == Path("m.onnx") and spec.percentile == 99.0
    assert spec.mean == [0.0, 0.5] and spec.cq.clamp_max == 1.0
    # a spec read back from its own JSON (a job row, a shard plan) validates again
    assert JobSpec.model_validate(json.loads(spec.model_dump_json())) == spec


def _safetensors(header: bytes, data: bytes = b"\0" * 16, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def _entry(shape, offsets=(0, 16), dtype="F32") -> bytes:
    return json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": list(offsets)}},
                      allow_nan=True).encode()


_DEEP = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
_TWICE = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
# case → (file bytes, words of the reason); also used by tests/api/test_hostile_inputs.py
HOSTILE_HEADERS = {
    "deeply nested": (_safetensors(_DEEP), "nested too deeply"),
    "infinite size": (_safetensors(_entry([float("inf")])), "Infinity"),
    "nan size": (_safetensors(_entry([float("nan")])), "NaN"),
    "float size": (_safetensors(b'{"w": {"dtype": "F32", "shape": [1e400], '
                                b'"data_offsets": [0, 16]}}'), "whole numbers"),
    "negative size": (_safetensors(_entry([-4])), "whole numbers"),
    "huge size": (_safetensors(_entry([10**30])), "whole numbers"),
    "bool size": (_safetensors(_entry([True, 4])), "whole numbers"),
    "5000-digit size": (_safetensors(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000
                                     + b'], "data_offsets": [0, 16]}}'), "not valid JSON"),
    "huge offsets": (_safetensors(_entry([4], (0, 10**20))), "whole numbers"),
    "far offsets": (_safetensors(_entry([4], (10**18, 10**18 + 16))), "truncated"),
    "too many dims": (_safetensors(_entry([1] * 1000)), "at most 64"),
    "huge product": (_safetensors(_entry([2**40] * 60)), "over the"),
    "header past the end": (_safetensors(_entry([4]), length=10**9), "truncated"),
    "header length 2**64-1": (_safetensors(_entry([4]), length=2**64 - 1), "truncated"),
    "duplicate keys": (_safetensors(_TWICE + _TWICE[1:-2] + b"}"), "twice"),
    "bad metadata": (_safetensors(b'{"__metadata__": [1], "w": {"dtype": "F32", "shape": '
                                  b'[4], "data_offsets": [0, 16]}}'), "__metadata__"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_a_hostile_safetensors_header_is_rejected_with_a_reason(tmp_path, case):
    from core.errors import ModelRejected
    from core.ingest import load_model

    payload, reason = HOSTILE_HEADERS[case]
    path = tmp_path / "w.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ModelRejected) as refused:
        load_model(path, "mlp-digits")
    assert refused.value.code in {"malformed", "truncated", "too-large"}
    assert reason in str(refused.value)


def test_the_report_names_no_server_path(tmp_path):
    from core import pipeline

    model = tmp_path / "private" / "uploads" / "0123" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(tiny_onnx_bytes())
    data_dir = tmp_path / "private" / "datasets"
    spec = JobSpec(model_path=model, data_dir=data_dir, dataset="digits",
                   methods=["robust-norm"], timesteps=2, calib_samples=20, eval_samples=20,
                   batch_size=20, device="cpu")
    report = pipeline.run_into(spec, tmp_path / "out")
    text = (tmp_path / "out" / "report.json").read_text()
    assert str(tmp_path) not in text and "/private/" not in text
    assert report.spec["model_path"] == "model.onnx" and report.spec["data_dir"] == "datasets"
    for name in (p.name for p in (tmp_path / "out").iterdir()):
        written = (tmp_path / "out" / name)
        if written.suffix in {".json", ".md", ".csv", ".html", ".txt"}:
            assert str(tmp_path) not in written.read_text(), name
