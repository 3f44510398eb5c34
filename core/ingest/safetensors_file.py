"""Read a safetensors file after checking that its header tells the truth.

The header (8-byte length, then JSON) declares every tensor's dtype, shape and byte range.
We check those declarations against the file length and the memory cap before the library
allocates anything.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from core.errors import ModelRejected
from core.ingest.limits import DEFAULT_MAX_BYTES, require_file_within_cap, require_within_cap
from core.ingest.sniff import error_reason

# Real headers hold ~100 bytes per tensor; 16 MiB is >100,000 tensors, and parsing it is cheap.
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_DIMS = 64
_MAX_INT = 2**63 - 1  # what the header's u64/usize fields can mean for a real file
_SHOWN_NAME_CHARS = 80
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
    length = _header_length(path)
    header = _read_header(path, size, length)
    _check_declarations(header, size - 8 - length, max_bytes)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        raise ModelRejected(f"the safetensors file is corrupt ({error_reason(err)})",
                            code="malformed") from None


def _malformed(reason: str) -> ModelRejected:
    return ModelRejected(f"the safetensors header is malformed: {reason}", code="malformed")


def _shown(name: str) -> str:
    """A tensor name for a message: a hostile header's names can be megabytes long."""
    return repr(name if len(name) <= _SHOWN_NAME_CHARS else name[:_SHOWN_NAME_CHARS] + "…")


def _header_length(path: Path) -> int:
    with path.open("rb") as stream:
        prefix = stream.read(8)
    if len(prefix) < 8:
        raise ModelRejected("the safetensors file is truncated", code="truncated")
    return struct.unpack("<Q", prefix)[0]


def _refuse_constant(constant: str) -> None:
    raise _malformed(f"it contains {constant}, which is not a size")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    header = dict(pairs)
    if len(header) != len(pairs):
        raise _malformed("a key appears twice")
    return header


def _read_header(path: Path, size: int, length: int) -> dict:
    if 8 + length > size:
        raise ModelRejected(
            "the safetensors header claims more bytes than the file holds; the file is truncated",
            code="truncated",
        )
    if length > _MAX_HEADER_BYTES:
        raise _malformed(f"it is {length} bytes long, over the {_MAX_HEADER_BYTES}-byte limit")
    with path.open("rb") as stream:
        stream.seek(8)
        raw = stream.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                            object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _malformed("its JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, and ints of >4300 digits
        raise ModelRejected("the safetensors header is not valid JSON", code="malformed") from None
    if not isinstance(header, dict):
        raise ModelRejected("the safetensors header is not a JSON object", code="malformed")
    return header


def _check_declarations(header: dict, data_bytes: int, max_bytes: int) -> None:
    declared_total = 0
    furthest_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            _check_metadata(entry)
            continue
        nbytes, (begin, end) = _declared_size(name, entry, max_bytes)
        declared_total += nbytes
        require_within_cap(declared_total, max_bytes, "the safetensors header")
        if end - begin != nbytes:
            raise ModelRejected(
                f"tensor {_shown(name)} declares {nbytes} bytes but a {end - begin}-byte range",
                code="malformed",
            )
        if end > data_bytes:
            raise ModelRejected(
                f"tensor {_shown(name)} ends at byte {end} but the file holds {data_bytes} data "
                "bytes; the file is truncated",
                code="truncated",
            )
        furthest_end = max(furthest_end, end)
    if furthest_end != data_bytes:
        raise ModelRejected(
            "the safetensors file has bytes that no tensor accounts for", code="malformed"
        )


def _check_metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()):
        raise _malformed("__metadata__ must map names to strings")


def _size(value: object) -> int:
    """A non-negative JSON integer (not a bool, not a float) a file could really hold."""
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise ValueError(value)
    return value


def _declared_size(name: str, entry: object, max_bytes: int) -> tuple[int, tuple[int, int]]:
    """Bytes implied by dtype and shape, and the declared byte range."""
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPE_BYTES:
        raise ModelRejected(
            f"tensor {_shown(name)} has a malformed header entry (or an unknown dtype)",
            code="malformed",
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS:
        raise _malformed(f"tensor {_shown(name)} needs a shape of at most {_MAX_DIMS} sizes")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise _malformed(f"tensor {_shown(name)} needs data_offsets [begin, end]")
    try:
        dims = [_size(d) for d in shape]
        begin, end = (_size(o) for o in offsets)
    except ValueError as err:
        raise _malformed(
            f"tensor {_shown(name)} has the size {str(err.args[0])[:40]}; shapes and offsets "
            f"must be whole numbers from 0 to {_MAX_INT}") from None
    if end < begin:
        raise _malformed(f"tensor {_shown(name)} ends before it begins")
    nbytes = _DTYPE_BYTES[entry["dtype"]] if 0 not in dims else 0
    for dim in dims:  # stop multiplying once over the cap: the product of 64 huge sizes is vast
        nbytes *= dim
        if nbytes > max_bytes:
            require_within_cap(nbytes, max_bytes, f"the safetensors tensor {_shown(name)}")
    return nbytes, (begin, end)
