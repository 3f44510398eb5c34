"""Model ingestion: bytes on disk → a validated, evaluated ``torch.fx.GraphModule``.

Uploads are data, never code.  Three formats are accepted — ONNX (imported by our own
translator; external data is read only from plain files beside the .onnx), safetensors weights
for a zoo architecture, and ``torch.save`` state_dicts (loaded with ``weights_only=True``) — and
every other kind of file is refused with a ``ModelRejected`` whose ``code`` names the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import fx

from core.errors import ModelRejected
from core.ingest.limits import DEFAULT_MAX_BYTES
from core.ingest.onnx_file import default_opset, read_onnx
from core.ingest.onnx_import import import_onnx, supported_ops
from core.ingest.safetensors_file import load_safetensors_file
from core.ingest.sniff import sniff_format
from core.ingest.state_dict_file import load_state_dict_file, state_dict_to_safetensors
from core.ingest.zoo_weights import build_with_weights

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LoadedModel",
    "load_model",
    "self_contained_onnx",
    "sniff_format",
    "state_dict_to_safetensors",
    "supported_ops",
]


class LoadedModel(BaseModel):
    """An imported model: a float32 GraphModule in eval mode and what we know about it."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    module: fx.GraphModule
    format: Literal["onnx", "safetensors", "state_dict"]
    input_shape: tuple[int, ...]
    opset: int | None = None


def load_model(path: Path, arch: str | None = None, *,
               max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedModel:
    """Validate and load the model file at ``path``.

    ``arch`` names the zoo architecture for weights-only formats (safetensors, state_dict);
    it is ignored for ONNX.  Raises ``ModelRejected`` for anything we will not load.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind == "onnx":
        model = read_onnx(path, max_bytes)
        module, sample_shape = import_onnx(model, max_bytes)
        return LoadedModel(module=module, format="onnx", input_shape=sample_shape,
                           opset=default_opset(model))
    read_weights = load_safetensors_file if kind == "safetensors" else load_state_dict_file
    module, sample_shape = build_with_weights(arch, read_weights(path, max_bytes))
    return LoadedModel(module=module, format=kind, input_shape=sample_shape)


def self_contained_onnx(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The ONNX model at ``path`` with its external data (files beside it) read in, serialised.

    What the service stores for an upload of ``m.onnx`` plus ``m.onnx.data``: one file that
    later loads without its companions.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind != "onnx":
        raise ModelRejected(f"the .onnx file is not an ONNX model but a {kind} file",
                            code="unrecognised-format")
    return read_onnx(path, max_bytes).SerializeToString()
