"""Hand a trained model back to the user as ONNX and as safetensors (atomic writes)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core.paths import atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def onnx_bytes(
    model: nn.Module, input_shape: Sequence[int], opset: int = 18, *, dynamo: bool = True
) -> bytes:
    """Serialise ``model`` (eval mode, CPU) to ONNX with a dynamic batch dimension.

    ``input_shape`` includes the batch dimension, e.g. (1, 1, 28, 28).  CQ activations export
    as Clip → Mul → Floor → Div.  ``dynamo=True`` uses PyTorch's default (torch.export based)
    exporter; ``dynamo=False`` the TorchScript-based one — both produce that op chain.
    """
    model = model.cpu().eval()
    example = (torch.zeros(*input_shape),)
    common = {"opset_version": opset, "input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model, example, dynamo=True, verbose=False, **common,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(
            model, example, buffer, dynamo=False, **common,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        return buffer.getvalue()


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    opset: int = 18,
    *,
    dynamo: bool = True,
) -> Path:
    """Write ``model`` as a self-contained ONNX file at ``path`` (checked, then atomically)."""
    data = onnx_bytes(model, input_shape, opset, dynamo=dynamo)
    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write_bytes(Path(path), data)
    return Path(path)


def export_safetensors(
    model: nn.Module, path: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write the model's state_dict (parameters and buffers) as safetensors, atomically.

    Tensors are copied to contiguous CPU memory first: safetensors refuses shared storage.
    """
    tensors = {
        name: tensor.detach().cpu().contiguous().clone()
        for name, tensor in model.state_dict().items()
    }
    atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata=metadata))
    return Path(path)
