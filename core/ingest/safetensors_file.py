"""Read a safetensors file after checking that its header tells the truth.

The header (8-byte length, then JSON) declares every tensor's dtype, shape and byte range.
We check those declarations against the file length and the memory cap before the library
allocates anything.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from core.errors import ModelRejected
from core.ingest.limits import DEFAULT_MAX_BYTES, require_file_within_cap, require_within_cap

_MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


def load_safetensors_file(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, torch.Tensor]:
    """Load every tensor of the safetensors file at ``path`` after validating its header."""
    size = path.stat().st_size
    require_file_within_cap(size, max_bytes)
    header = _read_header(path, size)
    data_bytes = size - 8 - _header_length(path)
    _check_declarations(header, data_bytes, max_bytes)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelRejected(f"the safetensors file is corrupt ({err})", code="malformed") from None


def _header_length(path: Path) -> int:
    with path.open("rb") as stream:
        prefix = stream.read(8)
    if len(prefix) < 8:
        raise ModelRejected("the safetensors file is truncated", code="truncated")
    return struct.unpack("<Q", prefix)[0]


def _read_header(path: Path, size: int) -> dict:
    length = _header_length(path)
    if length > _MAX_HEADER_BYTES:
        raise ModelRejected("the safetensors header is implausibly large", code="malformed")
    if 8 + length > size:
        raise ModelRejected(
            "the safetensors header claims more bytes than the file holds; the file is truncated",
            code="truncated",
        )
    with path.open("rb") as stream:
        stream.seek(8)
        raw = stream.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelRejected("the safetensors header is not valid JSON", code="malformed") from None
    if not isinstance(header, dict):
        raise ModelRejected("the safetensors header is not a JSON object", code="malformed")
    return header


def _check_declarations(header: dict, data_bytes: int, max_bytes: int) -> None:
    declared_total = 0
    furthest_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        nbytes, (begin, end) = _declared_size(name, entry)
        declared_total += nbytes
        require_within_cap(declared_total, max_bytes, "the safetensors header")
        if end - begin != nbytes:
            raise ModelRejected(
                f"tensor {name!r} declares {nbytes} bytes but a {end - begin}-byte range",
                code="malformed",
            )
        if end > data_bytes:
            raise ModelRejected(
                f"tensor {name!r} ends at byte {end} but the file holds {data_bytes} data bytes; "
                "the file is truncated",
                code="truncated",
            )
        furthest_end = max(furthest_end, end)
    if furthest_end != data_bytes:
        raise ModelRejected(
            "the safetensors file has bytes that no tensor accounts for", code="malformed"
        )


def _declared_size(name: str, entry: object) -> tuple[int, tuple[int, int]]:
    """Bytes implied by dtype and shape, and the declared byte range."""
    try:
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]  # type: ignore[index]
        itemsize = _DTYPE_BYTES[dtype]
        dims = [int(d) for d in shape]
        begin, end = (int(o) for o in offsets)
    except (TypeError, KeyError, ValueError):
        raise ModelRejected(
            f"tensor {name!r} has a malformed header entry (or an unknown dtype)",
            code="malformed",
        ) from None
    if any(d < 0 for d in dims) or begin < 0 or end < begin:
        raise ModelRejected(f"tensor {name!r} has negative sizes", code="malformed")
    return itemsize * math.prod(dims), (begin, end)
