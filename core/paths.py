"""Where snnconv keeps files between runs, and how it writes a file no reader sees half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Trained weights kept between runs: $SNNCONV_CACHE, else $XDG_CACHE_HOME/snnconv,
    else ~/.cache/snnconv (the demo's weights at the top, the benchmarks' under bench/)."""
    environ = os.environ if environ is None else environ
    if environ.get("SNNCONV_CACHE"):
        return Path(environ["SNNCONV_CACHE"])
    cache = Path(environ.get("XDG_CACHE_HOME") or "")
    if not cache.is_absolute():  # the XDG spec says to ignore a relative value
        cache = Path.home() / ".cache"
    return cache / "snnconv"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
