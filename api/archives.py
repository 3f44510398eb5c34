"""Unpack a zip or tar of an ONNX model and its external data, refusing anything but plain files.

Members are copied, never extracted with the archive library's own extractor: a member must be
a regular file with a plain name (no folders, ``..``, links or devices), there may be only a few
of them, and their sizes, declared and actually read, must fit the upload cap together.  Zip
bombs therefore stop at the cap; nothing is ever unpickled.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from api import files
from core.errors import ModelRejected
from core.ingest.onnx_external import plain_name_problem

MAX_MEMBERS = 16
_ZIP_MAGIC = b"PK\x03\x04"
_TAR_MAGIC_OFFSET, _TAR_MAGIC = 257, b"ustar"
_ZIP_ENCRYPTED_FLAG = 0x1
HOW_TO_PACK = ("pack the files at the top level, e.g. zip -j model.zip m.onnx m.onnx.data "
               "or tar -cf model.tar m.onnx m.onnx.data")


@dataclass(frozen=True)
class Member:
    """A plain file in the archive, with a way to open it for reading."""

    name: str
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]


def is_archive(path: Path) -> bool:
    """A tar, or a zip holding an .onnx file (a torch.save zip never does): sent to unpack."""
    kind = _kind(path)
    if kind != "zip":
        return kind == "tar"
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.lower().endswith(".onnx") for n in archive.namelist())
    except (zipfile.BadZipFile, EOFError, OSError):
        return False  # the state_dict reader reports the corrupt zip


def unpack(path: Path, dest: Path, limit_bytes: int) -> list[str]:
    """Copy the archive's members into the new folder ``dest``; returns their names."""
    dest.mkdir()
    opener = _zip_members if _kind(path) == "zip" else _tar_members
    try:
        with opener(path) as members:
            _check_members(members, limit_bytes)
            budget = limit_bytes
            for member in members:
                with member.open() as source:
                    budget -= files.copy_named(source, dest / member.name, budget).size_bytes
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise ModelRejected(f"the archive is truncated or corrupt ({err})",
                            code="truncated") from None
    return [member.name for member in members]


def _kind(path: Path) -> Literal["zip", "tar"] | None:
    """Recognised by the first bytes, as every upload is."""
    with path.open("rb") as stream:
        head = stream.read(_TAR_MAGIC_OFFSET + len(_TAR_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    return "tar" if head[_TAR_MAGIC_OFFSET:] == _TAR_MAGIC else None


def _refuse(message: str) -> ModelRejected:
    return ModelRejected(f"{message}; {HOW_TO_PACK}", code="archive-member")


def _check_members(members: list[Member], limit_bytes: int) -> None:
    """Names plain and unique, and the declared sizes within the cap, before any copying."""
    seen: set[str] = set()
    for member in members:
        problem = plain_name_problem(member.name)
        if problem:
            raise _refuse(f"archive member {member.name!r} {problem}")
        if member.name in seen:
            raise _refuse(f"archive member {member.name!r} appears twice")
        seen.add(member.name)
    if sum(member.size for member in members) > limit_bytes:
        raise files.upload_too_large(limit_bytes)


def _require_few(count: int) -> None:
    if count > MAX_MEMBERS:
        raise _refuse(f"the archive has more than {MAX_MEMBERS} members; send only the .onnx "
                      "file and its data files")


@contextmanager
def _zip_members(path: Path) -> Iterator[list[Member]]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        _require_few(len(infos))
        yield [_zip_member(archive, info) for info in infos]


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    mode = info.external_attr >> 16  # Unix mode; its file-type bits may be left unset
    if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise _refuse(f"archive member {info.filename!r} is {kind}")
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
        raise _refuse(f"archive member {info.filename!r} is encrypted")
    return Member(info.filename, info.file_size, lambda: archive.open(info))


@contextmanager
def _tar_members(path: Path) -> Iterator[list[Member]]:
    with tarfile.open(path, mode="r:") as archive:
        members = []
        for info in archive:  # read lazily, so a million headers stop at the count
            _require_few(len(members) + 1)
            members.append(_tar_member(archive, info))
        yield members


def _tar_member(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Member:
    if not info.isreg():
        kind = "a link" if info.issym() or info.islnk() else "not a regular file"
        raise _refuse(f"archive member {info.name!r} is {kind}")
    return Member(info.name, info.size, lambda: _tar_source(archive, info))


@contextmanager
def _tar_source(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[BinaryIO]:
    source = archive.extractfile(info)
    if source is None:
        raise _refuse(f"archive member {info.name!r} has no data")
    with source:
        yield source
