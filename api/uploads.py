"""One upload request → the one model file we store.

A model arrives as one file (stored as sent), or as an ONNX file with its external data
(what ``torch.onnx.export`` writes by default: ``m.onnx`` and ``m.onnx.data``): several
``file`` parts in one request, or one zip/tar archive of them.  Every file of an upload lands in
that upload's private folder, so an external ``location`` can only name a file of the same
upload, under its plain name.  What is stored for a pair is one self-contained ``model.onnx``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from api import archives, files
from core.errors import ModelRejected
from core.ingest import self_contained_onnx
from core.ingest.onnx_external import plain_name_problem

MAX_PARTS = archives.MAX_MEMBERS
SELF_CONTAINED_NAME = f"{files.MODEL_STEM}.onnx"
_PAIR_EXAMPLE = "-F file=@m.onnx -F file=@m.onnx.data"


@dataclass(frozen=True)
class PreparedModel:
    """The file to store (inside the upload's private folder) and the name the client gave."""

    staged: files.StagedUpload
    filename: str | None


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(files.CHUNK_BYTES):
        yield chunk


async def prepare_model(parts: list[UploadFile], folder: Path,
                        limit_bytes: int) -> PreparedModel:
    """Stage the upload's parts in ``folder`` and return the one file to pre-flight and keep."""
    if len(parts) > MAX_PARTS:
        raise ModelRejected(f"the upload has {len(parts)} files, more than {MAX_PARTS}; send the "
                            ".onnx file and its data files only", code="upload-parts")
    if len(parts) > 1:
        names = await _stage_parts(parts, folder / "parts", limit_bytes)
        return await _internalised(folder, folder / "parts", names, limit_bytes)
    single = parts[0]
    staged = await files.stage_upload(_chunks(single), folder,
                                      files.safe_suffix(single.filename), limit_bytes)
    if not await asyncio.to_thread(archives.is_archive, staged.path):
        return PreparedModel(staged, single.filename)
    members = await asyncio.to_thread(archives.unpack, staged.path, folder / "members",
                                      limit_bytes)
    return await _internalised(folder, folder / "members", members, limit_bytes)


async def _stage_parts(parts: list[UploadFile], dest: Path, limit_bytes: int) -> list[str]:
    """Each part under its own plain name; the total of all parts within the cap."""
    names = [_part_name(upload.filename) for upload in parts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelRejected(f"the upload has several files named {duplicates}; send each file "
                            "once", code="upload-name")
    dest.mkdir()
    budget = limit_bytes
    for upload, name in zip(parts, names, strict=True):
        budget -= (await files.stage_named(_chunks(upload), dest / name, budget)).size_bytes
    return names


def _part_name(filename: str | None) -> str:
    """The part's file name, which the model's external_data ``location`` must equal."""
    problem = plain_name_problem(filename or "")
    if problem:
        raise ModelRejected(
            f"the uploaded file name {filename!r} {problem}; send each file under its plain "
            f"name, as the model's external data names it (curl {_PAIR_EXAMPLE})",
            code="upload-name")
    return filename


def _the_onnx_name(names: list[str]) -> str:
    onnx_names = [name for name in names if name.lower().endswith(".onnx")]
    if len(onnx_names) != 1:
        raise ModelRejected(
            f"an upload of several files needs exactly one .onnx file, got {onnx_names or 'none'}"
            f" among {names}; send the model with its data files, e.g. curl {_PAIR_EXAMPLE}",
            code="upload-parts")
    return onnx_names[0]


async def _internalised(folder: Path, directory: Path, names: list[str],
                        limit_bytes: int) -> PreparedModel:
    """Read the .onnx with its external data from the upload's own files; keep one file."""
    name = _the_onnx_name(names)
    data = await asyncio.to_thread(self_contained_onnx, directory / name, max_bytes=limit_bytes)
    return PreparedModel(files.write_new(data, folder / SELF_CONTAINED_NAME), name)
