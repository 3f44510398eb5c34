"""Where snnconv keeps files between runs on the user's machine."""

from __future__ import annotations

import os
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
