"""Locating dataset files under the data directory and explaining what is missing."""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import DatasetUnavailable

# A user-chosen dataset name becomes a path component; refuse anything that could escape.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def require_data_dir(data_dir: Path | None, dataset: str, needs: str) -> Path:
    """The data directory, or ``DatasetUnavailable`` saying that ``dataset`` needs one."""
    if data_dir is None:
        raise DatasetUnavailable(
            f"dataset {dataset!r} is read from a data directory, but none is configured; "
            f"set a data directory and put {needs} in it"
        )
    return Path(data_dir)


def safe_component(name: str, dataset: str) -> str:
    """``name`` if it is a plain file/folder name, else ``DatasetUnavailable``."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise DatasetUnavailable(
            f"dataset {dataset!r}: {name!r} is not a valid name (letters, digits, '.', '_', "
            "'-'; no path separators)"
        )
    return name


def find_with_optional_gz(folder: Path, filename: str) -> Path | None:
    """``folder/filename`` or its gzipped twin ``filename.gz``, whichever exists."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files_error(
    dataset: str, folder: Path, missing: list[str], needed: str
) -> DatasetUnavailable:
    """A ``DatasetUnavailable`` naming the missing files and where they belong."""
    return DatasetUnavailable(
        f"dataset {dataset!r} is not available: missing {', '.join(missing)} in {folder}. "
        f"Put {needed} there.",
        details={"folder": str(folder), "missing": missing},
    )
