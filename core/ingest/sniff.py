"""Recognise a model file by its first bytes, never by its name.

Only three formats are accepted.  Everything whose loader could run code (raw pickles,
TorchScript, ``torch.export`` archives) is refused here with its own error code, before any
parser sees the bytes.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Literal

from core.errors import ModelRejected

ModelFormat = Literal["onnx", "safetensors", "state_dict"]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_BYTES = range(2, 6)
# ONNX has no magic number; a ModelProto starts with field 1 (ir_version) as a small varint.
_ONNX_FIRST_BYTE = 0x08
_ONNX_MAX_IR_VERSION = 64
_TORCHSCRIPT_MARKERS = ("constants.pkl",)
_TORCHSCRIPT_DIRS = ("code/",)
_TORCH_EXPORT_MARKERS = ("archive_format", "serialized_exported_program.json")
_TORCH_EXPORT_DIRS = ("models/",)


def sniff_format(path: Path) -> ModelFormat:
    """Name the format of the model file at ``path`` or raise ``ModelRejected`` saying why not."""
    head = _read_head(path, 16)
    if not head:
        raise ModelRejected("the file is empty", code="empty-file")
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOL_BYTES:
        raise ModelRejected(
            "the file is a raw Python pickle, which could run code when loaded; "
            "export to ONNX, or save model.state_dict() with a current torch.save "
            "(old-style non-zip torch.save files are raw pickles too)",
            code="pickle",
        )
    if head.startswith(_ZIP_MAGIC):
        _refuse_code_archives(path)
        return "state_dict"
    if _looks_like_safetensors(path, head):
        return "safetensors"
    if head[0] == _ONNX_FIRST_BYTE and len(head) > 1 and 0 < head[1] <= _ONNX_MAX_IR_VERSION:
        return "onnx"
    raise ModelRejected(
        "the file is not an ONNX model, a safetensors file or a torch.save state_dict",
        code="unrecognised-format",
    )


def _read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as stream:
        return stream.read(size)


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    """An 8-byte little-endian header length followed by a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len < 2:
        return False
    if 8 + header_len > path.stat().st_size:
        raise ModelRejected(
            "the safetensors header claims more bytes than the file holds; "
            "the file is truncated",
            code="truncated",
        )
    return True


def error_reason(err: BaseException) -> str:
    """``err`` for a message users see: an OSError without its file name (a server path)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)


def archive_names(path: Path) -> list[str]:
    """Entry names of a zip archive, refusing corrupt or truncated archives."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ModelRejected(
            f"the zip archive is truncated or corrupt ({error_reason(err)})", code="truncated"
        ) from None


def _refuse_code_archives(path: Path) -> None:
    """TorchScript and torch.export archives carry code or programs; refuse both."""
    inner = [_strip_root(name) for name in archive_names(path)]
    if any(n in _TORCHSCRIPT_MARKERS or n.startswith(_TORCHSCRIPT_DIRS) for n in inner):
        raise ModelRejected(
            "the file is a TorchScript archive, which contains code; "
            "export to ONNX or save model.state_dict() instead",
            code="torchscript",
        )
    if any(n in _TORCH_EXPORT_MARKERS or n.startswith(_TORCH_EXPORT_DIRS) for n in inner):
        raise ModelRejected(
            "the file is a torch.export (.pt2) archive, whose loader can run code; "
            "export to ONNX or save model.state_dict() instead",
            code="torch-export",
        )


def _strip_root(name: str) -> str:
    """torch.save nests every entry under one folder named after the file."""
    return name.split("/", 1)[1] if "/" in name else name
