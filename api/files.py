"""Artifacts on disk: uploaded models and job results inside the data directory.

Uploads are streamed into a private hidden folder with a size cap and only renamed into place
once pre-flight accepted them; the folder is removed whatever happens, so a refused upload
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import ModelRejected, TooLarge

CHUNK_BYTES = 1 << 20
# The client's suffixes kept while staging; what is stored is named by the detected format.
MODEL_SUFFIXES = frozenset({".onnx", ".safetensors", ".pt", ".pth", ".bin", ".ckpt",
                            ".zip", ".tar", ".tgz", ".gz"})
FORMAT_SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "state_dict": ".pt"}
MAX_NAME_CHARS = 200
_FOLDERS = re.compile(r"[\\/]")
MODEL_STEM = "model"
STAGING_PREFIX = ".staging-"
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class StagedUpload:
    """An upload written to a temporary file, not yet accepted."""

    path: Path
    size_bytes: int
    sha256: str


def safe_suffix(filename: str | None) -> str:
    """The client's file extension when it is a model or archive suffix, else none.

    Only the staged file carries it; the stored file's suffix is its detected format's
    (:func:`stored_suffix`), so ``evil.sh`` or ``x.onnx\\0.sh`` is never kept as ``model.sh``.
    """
    suffix = Path(_FOLDERS.split(filename or "")[-1]).suffix.lower()
    return suffix if suffix in MODEL_SUFFIXES and "\0" not in (filename or "") else ""


def stored_suffix(path: Path) -> str:
    """The suffix of the format the file's bytes show; the staged suffix only if unknown."""
    from core.ingest.sniff import sniff_format  # core.ingest imports torch: not at start-up

    try:
        return FORMAT_SUFFIXES[sniff_format(path)]
    except ModelRejected:
        return path.suffix if path.suffix in MODEL_SUFFIXES else ""


def clean_name(text: str | None) -> str:
    """``text`` as a display name: no control or format characters (NUL, newlines, bidi
    overrides), whitespace runs as one space, at most ``MAX_NAME_CHARS`` characters."""
    printable = "".join(c if c.isprintable() else " " if c.isspace() else ""
                        for c in text or "")
    return " ".join(printable.split())[:MAX_NAME_CHARS].strip()


def model_name(given: str | None, filename: str | None, model_id: str) -> str:
    """The name a model is listed under: the one given, else the uploaded file's own name
    (without folders), cleaned (:func:`clean_name`); the model's id when nothing is left."""
    for candidate in (given, _FOLDERS.split(filename or "")[-1]):
        if name := clean_name(candidate):
            return name
    return model_id


def upload_too_large(limit_bytes: int) -> TooLarge:
    return TooLarge(
        f"the upload exceeds the limit of {limit_bytes // (1024 * 1024)} MiB; raise "
        "SNNCONV_MAX_UPLOAD_MB on the server or upload a smaller model")


class _Sink:
    """A new file being written: counted, hashed, refused at the byte that crosses the limit."""

    def __init__(self, path: Path, handle: int, limit_bytes: int) -> None:
        self.path, self.limit_bytes = path, limit_bytes
        self.stream = os.fdopen(handle, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit_bytes:
            raise upload_too_large(self.limit_bytes)
        self.digest.update(chunk)
        self.stream.write(chunk)

    def staged(self) -> StagedUpload:
        return StagedUpload(path=self.path, size_bytes=self.size, sha256=self.digest.hexdigest())


@contextlib.contextmanager
def _sink(path: Path, handle: int, limit_bytes: int) -> Iterator[_Sink]:
    """Write a new file; on any failure it is closed and deleted, never left half-written."""
    sink = _Sink(path, handle, limit_bytes)
    try:
        with sink.stream:
            yield sink
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def stage_upload(chunks: AsyncIterator[bytes], directory: Path, suffix: str,
                       limit_bytes: int) -> StagedUpload:
    """Stream ``chunks`` into a temporary file in ``directory``; refuse more than the limit.

    The caller owns the returned file: accept it with :func:`accept_upload`, or let the
    :func:`private_folder` it was staged in be removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=suffix)
    with _sink(Path(name), handle, limit_bytes) as sink:
        async for chunk in chunks:
            sink.write(chunk)
        if sink.size == 0:
            raise ModelRejected("the uploaded file is empty; send the model in the field 'file'",
                                code="empty-file")
    return sink.staged()


async def stage_named(chunks: AsyncIterator[bytes], path: Path,
                      limit_bytes: int) -> StagedUpload:
    """Stream ``chunks`` into the new file ``path`` (never an existing file or a link)."""
    with _sink(path, os.open(path, _NEW_FILE_FLAGS, 0o600), limit_bytes) as sink:
        async for chunk in chunks:
            sink.write(chunk)
    return sink.staged()


def copy_named(source: BinaryIO, path: Path, limit_bytes: int) -> StagedUpload:
    """Copy ``source`` into the new file ``path``, counting the bytes actually read."""
    with _sink(path, os.open(path, _NEW_FILE_FLAGS, 0o600), limit_bytes) as sink:
        while chunk := source.read(CHUNK_BYTES):
            sink.write(chunk)
    return sink.staged()


def write_new(data: bytes, path: Path) -> StagedUpload:
    """Write ``data`` to the new file ``path`` (e.g. a model we serialised ourselves)."""
    with _sink(path, os.open(path, _NEW_FILE_FLAGS, 0o600), len(data)) as sink:
        sink.write(data)
    return sink.staged()


@contextlib.contextmanager
def private_folder(uploads_dir: Path) -> Iterator[Path]:
    """A fresh hidden folder (mode 0700) for one upload's files, removed whatever happens.

    Files of other uploads never share it, so an ONNX file's external data can only name
    files sent in the same upload.
    """
    uploads_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=uploads_dir))
    try:
        yield folder
    finally:
        remove_tree(folder)


def accept_upload(staged: StagedUpload, model_dir: Path) -> Path:
    """Move an accepted upload into its own directory, atomically; returns the final path."""
    model_dir.mkdir(parents=True, exist_ok=False)
    final = model_dir / f"{MODEL_STEM}{stored_suffix(staged.path)}"
    os.replace(staged.path, final)
    return final


def remove_tree(directory: Path) -> None:
    """Delete a model's or job's directory; missing is fine."""
    shutil.rmtree(directory, ignore_errors=True)


def model_dir(uploads_dir: Path, model_id: str) -> Path:
    return uploads_dir / model_id


def job_dir(results_dir: Path, job_id: str) -> Path:
    return results_dir / job_id
