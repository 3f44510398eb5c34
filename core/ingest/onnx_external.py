"""Read an ONNX model's external tensor data, from the folder of the .onnx file only.

``torch.onnx.export(model, (x,), "m.onnx")`` (the dynamo exporter, the default) writes large
weights to ``m.onnx.data`` beside ``m.onnx``.  We accept that, but each tensor's ``location``,
``offset`` and ``length`` are text from the uploader: the location may only name a regular file
directly in the model's folder (no paths, no links), and the byte range must lie inside that
file, match the tensor's dims and fit the memory cap, all before a single byte is read.  The
bytes then move into ``raw_data`` so the importer sees an ordinary self-contained model.
We do not use ``onnx.load_external_data_for_model``: it follows paths and links we refuse.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from onnx import TensorProto
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from core.errors import ModelRejected
from core.ingest.limits import require_within_cap
from core.ingest.onnx_tensors import declared_nbytes, tensor_name

READ_CHUNK_BYTES = 1 << 20
# No link followed, and no blocking if a FIFO was swapped in after the checks.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_DIGITS = re.compile(r"^[0-9]{1,20}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME_BYTES = 255  # what a file system allows for one name
# Keys the ONNX spec defines; ``basepath`` is written by the onnx package and ignored here.
_IGNORED_KEYS = ("checksum", "basepath")
FIX_HINT = (
    "keep the data file beside the .onnx file (in the API: upload both files together, or one "
    "zip of both), or re-export with every weight inside the .onnx file: "
    "torch.onnx.export(..., external_data=False) for PyTorch, "
    "onnx.save_model(model, path, save_as_external_data=False) for the onnx package"
)


class ExternalRef(BaseModel):
    """A tensor's ``external_data`` entries, parsed: where its bytes are said to be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    location: str
    offset: int = 0
    length: int | None = None

    @field_validator("offset", "length", mode="before")
    @classmethod
    def _decimal(cls, value: object) -> object:
        """Plain decimal digits only: no signs, spaces, underscores or exponents."""
        if not isinstance(value, str) or not _DIGITS.match(value):
            raise ValueError("must be a non-negative decimal integer")
        return int(value)


@dataclass(frozen=True)
class _Planned:
    """One external tensor whose range was checked: read ``length`` bytes at ``offset``."""

    tensor: TensorProto
    path: Path
    identity: tuple[int, int]
    offset: int
    length: int


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name (a path, ``..``, control characters), else None.

    Shared with the API, which applies the same rule to uploaded part and archive member names.
    """
    if not name or name in (".", ".."):
        return "is not a file name"
    if _CONTROL.search(name):
        return "contains control characters"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        return f"is longer than {_MAX_NAME_BYTES} bytes"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return "is an absolute path"
    if "/" in name or "\\" in name or PureWindowsPath(name).drive:
        return "contains a directory"
    return None


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def internalise_external_data(tensors: Iterable[TensorProto], folder: Path,
                              max_bytes: int) -> int:
    """Move every external tensor's bytes from files in ``folder`` into ``raw_data``.

    All locations, ranges and the total are checked first; only then is anything read.
    Returns how many tensors were internalised.
    """
    plans = [_plan(tensor, folder) for tensor in tensors if is_external(tensor)]
    require_within_cap(sum(plan.length for plan in plans), max_bytes,
                       "the model's external data")
    for plan in plans:
        data = _read_range(plan)
        plan.tensor.ClearField("external_data")
        plan.tensor.data_location = TensorProto.DEFAULT
        plan.tensor.raw_data = data
    return len(plans)


def _refuse(tensor: TensorProto, location: str, problem: str, code: str) -> ModelRejected:
    return ModelRejected(
        f"tensor {tensor_name(tensor)!r} keeps its data in the external file {location!r}, "
        f"which {problem}; {FIX_HINT}",
        code=code, details={"tensor": tensor_name(tensor), "location": location})


def _parse_ref(tensor: TensorProto) -> ExternalRef:
    entries: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key in entries:
            raise _refuse(tensor, entries.get("location", "?"),
                          f"is described twice (duplicate key {entry.key!r})",
                          "external-data-malformed")
        entries[entry.key] = entry.value
    fields = {k: v for k, v in entries.items() if k not in _IGNORED_KEYS}
    try:
        return ExternalRef.model_validate(fields)
    except ValidationError as err:
        wrong = ", ".join(".".join(map(str, e["loc"])) or "?" for e in err.errors())
        raise _refuse(tensor, entries.get("location", "?"),
                      f"is described by invalid external_data entries ({wrong})",
                      "external-data-malformed") from None


def _plan(tensor: TensorProto, folder: Path) -> _Planned:
    """Check one external tensor without reading its data."""
    ref = _parse_ref(tensor)
    problem = plain_name_problem(ref.location)
    if problem:
        raise _refuse(tensor, ref.location, f"{problem}; only a plain file name beside the "
                      ".onnx file (for an upload: one of the files sent with it) is read",
                      "external-data-path")
    path = folder / ref.location
    info = _lstat_regular(tensor, ref.location, path, folder)
    end = max(ref.offset, info.st_size) if ref.length is None else ref.offset + ref.length
    if end > info.st_size:
        raise _refuse(tensor, ref.location,
                      f"holds {info.st_size} bytes, but bytes {ref.offset} to {end} are asked "
                      "for; the data file is truncated or belongs to another export",
                      "external-data-range")
    length = end - ref.offset
    if tensor.data_type == TensorProto.STRING:
        raise _refuse(tensor, ref.location, "cannot hold string tensors",
                      "external-data-malformed")
    expected = declared_nbytes(tensor)
    if length != expected:
        raise _refuse(tensor, ref.location,
                      f"is said to hold {length} bytes for it, but its dims "
                      f"{list(tensor.dims)} need {expected}", "external-data-length")
    return _Planned(tensor, path, (info.st_dev, info.st_ino), ref.offset, length)


def _lstat_regular(tensor: TensorProto, location: str, path: Path,
                   folder: Path) -> os.stat_result:
    """The file's own status (links not followed); it must be a regular file in ``folder``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise _refuse(tensor, location, "is missing beside the .onnx file",
                      "external-data-missing") from None
    except OSError as err:
        raise _refuse(tensor, location, f"cannot be opened ({err.strerror})",
                      "external-data-missing") from None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(tensor, location, "is a symbolic link; links are never followed",
                      "external-data-path")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(tensor, location, "is not a regular file", "external-data-path")
    if path.resolve().parent != folder.resolve():
        raise _refuse(tensor, location, "lies outside the model's folder",
                      "external-data-path")
    return info


def _read_range(plan: _Planned) -> bytes:
    """Exactly ``plan.length`` bytes, from the very file that was checked (no link swapped in)."""
    location = plan.path.name
    try:
        fd = os.open(plan.path, _READ_FLAGS)
    except OSError as err:
        raise _refuse(plan.tensor, location, f"cannot be opened ({err.strerror})",
                      "external-data-path") from None
    with os.fdopen(fd, "rb", buffering=0) as stream:
        info = os.fstat(stream.fileno())
        if (info.st_dev, info.st_ino) != plan.identity or not stat.S_ISREG(info.st_mode):
            raise _refuse(plan.tensor, location, "changed while it was being read",
                          "external-data-path")
        stream.seek(plan.offset)
        chunks, remaining = [], plan.length
        while remaining and (chunk := stream.read(min(remaining, READ_CHUNK_BYTES))):
            chunks.append(chunk)
            remaining -= len(chunk)
    if remaining:
        raise _refuse(plan.tensor, location, "ended before the tensor's bytes did",
                      "external-data-range")
    return b"".join(chunks)
