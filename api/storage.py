"""Artifacts on disk: uploaded models and job results inside the data directory.

Uploads are streamed to a hidden temporary file with a size cap and only renamed into place
once pre-flight accepted them, so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelRejected

CHUNK_BYTES = 1 << 20
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
MODEL_STEM = "model"


@dataclass(frozen=True)
class StagedUpload:
    """An upload written to a temporary file, not yet accepted."""

    path: Path
    size_bytes: int
    sha256: str


def safe_suffix(filename: str | None) -> str:
    """The client's file extension when harmless (format detection may use it), else none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


async def stage_upload(chunks: AsyncIterator[bytes], directory: Path, suffix: str,
                       limit_bytes: int) -> StagedUpload:
    """Stream ``chunks`` into a temporary file in ``directory``; refuse more than the limit.

    The caller owns the returned file: accept it with :func:`accept_upload` or delete it with
    :func:`discard`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=suffix)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as stream:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit_bytes:
                    raise ModelRejected(
                        f"the upload exceeds the limit of {limit_bytes // (1024 * 1024)} MiB; "
                        "raise SNNCONV_MAX_UPLOAD_MB on the server or upload a smaller model",
                        code="too-large",
                    )
                digest.update(chunk)
                stream.write(chunk)
        if size == 0:
            raise ModelRejected("the uploaded file is empty; send the model in the field 'file'",
                                code="empty-file")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedUpload(path=path, size_bytes=size, sha256=digest.hexdigest())


def accept_upload(staged: StagedUpload, model_dir: Path) -> Path:
    """Move an accepted upload into its own directory, atomically; returns the final path."""
    model_dir.mkdir(parents=True, exist_ok=False)
    final = model_dir / f"{MODEL_STEM}{staged.path.suffix}"
    os.replace(staged.path, final)
    return final


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def remove_tree(directory: Path) -> None:
    """Delete a model's or job's directory; missing is fine."""
    shutil.rmtree(directory, ignore_errors=True)


def model_dir(uploads_dir: Path, model_id: str) -> Path:
    return uploads_dir / model_id


def job_dir(results_dir: Path, job_id: str) -> Path:
    return results_dir / job_id
