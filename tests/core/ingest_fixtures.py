"""Helpers for the ingest tests: exporting models to ONNX and comparing with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from core.ingest import LoadedModel

TOLERANCE = 1e-4


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, *, dynamo: bool,
                keep_batch_norm: bool = False, **options: object) -> Path:
    """Export ``model`` with the dynamo (default) or the legacy TorchScript-based exporter.

    ``keep_batch_norm`` stops either exporter from folding BatchNormalization into the conv.
    """
    model.eval()
    if keep_batch_norm:
        options.update({"optimize": False} if dynamo else
                       {"training": torch.onnx.TrainingMode.PRESERVE})
    buffer = io.BytesIO()
    with quiet_export():
        torch.onnx.export(model, (sample,), buffer, dynamo=dynamo, **options)
    path.write_bytes(buffer.getvalue())
    return path


@contextlib.contextmanager
def quiet_export():
    """Silence the exporters' logging, warnings and printed diagnostics."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def onnx_op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]


def onnxruntime_outputs(path: Path, x: np.ndarray, export_batch: int | None = None) -> np.ndarray:
    """onnxruntime's output for ``x``, run in chunks of the export batch if it is fixed."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    step = export_batch or len(x)
    chunks = [session.run(None, {name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(chunks)


def assert_matches_onnxruntime(path: Path, loaded: LoadedModel, batch: int,
                               export_batch: int | None = None, seed: int = 0) -> None:
    """Imported module and onnxruntime agree within 1e-4 on random inputs of size ``batch``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *loaded.input_shape)).astype(np.float32)
    expected = onnxruntime_outputs(path, x, export_batch)
    with torch.no_grad():
        actual = loaded.module(torch.from_numpy(x)).numpy()
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= TOLERANCE


def module_types(loaded: LoadedModel) -> set[type]:
    modules = dict(loaded.module.named_modules())
    return {type(modules[n.target]) for n in loaded.module.graph.nodes if n.op == "call_module"}


def function_targets(loaded: LoadedModel) -> list:
    return [n.target for n in loaded.module.graph.nodes if n.op == "call_function"]


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def float_input(name: str, sample_shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *sample_shape])


def float_output(name: str, rank: int) -> onnx.ValueInfoProto:
    dims = ["N", *(f"d{i}" for i in range(1, rank))]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def save_graph(path: Path, nodes: list, sample_shape: tuple[int, ...], initializers: list,
               opset: int, output_rank: int = 2,
               domains: tuple[tuple[str, int], ...] = ()) -> Path:
    """A model from input ``x`` to output ``y`` saved to ``path``."""
    graph = helper.make_graph(nodes, "test", [float_input("x", sample_shape)],
                              [float_output("y", output_rank)], initializer=initializers)
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in domains)]
    model = helper.make_model(graph, opset_imports=opsets,
                               ir_version=helper.find_min_ir_version_for(opsets))
    path.write_bytes(model.SerializeToString())
    return path
