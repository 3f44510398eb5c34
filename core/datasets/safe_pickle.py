"""A restricted unpickler for CIFAR's python batches: plain containers and numpy arrays only.

Pickles can call any importable function while they load, so a batch file from a data
directory is treated as hostile: only the globals that a dict of numpy arrays, bytes,
strings, ints and lists needs may be referenced; anything else stops loading before it runs.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

from core.errors import DatasetUnavailable

# (module, name) → the object it may resolve to.  Python 2's cPickle (the CIFAR originals)
# and numpy 1.x name ``numpy.core``; numpy 2 names ``numpy._core``; protocol 2 encodes bytes
# with ``_codecs.encode``; protocol 5 rebuilds arrays with ``_frombuffer``.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "bytes"): bytes,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only containers and numpy arrays.

    Raises ``DatasetUnavailable`` when the file references anything else (nothing it
    names is called) or is not a readable pickle.
    """
    data = path.read_bytes()
    try:
        # encoding="bytes" reads Python 2 strings (the CIFAR originals) as bytes.
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetUnavailable(
            f"{path} was refused: it is not a plain pickle of arrays and lists ({exc}); "
            "replace it with the original CIFAR batch file"
        ) from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DatasetUnavailable(f"{path} is not a readable CIFAR batch: {exc}") from exc
