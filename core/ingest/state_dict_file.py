"""Read a ``torch.save`` state_dict archive without letting it run code.

The zip is inspected first (size, compression ratio, exactly one pickle), then loaded with
``torch.load(weights_only=True)``, whose restricted unpickler only rebuilds tensors.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from core.errors import ModelRejected
from core.ingest.limits import DEFAULT_MAX_BYTES, mib, require_file_within_cap
from core.ingest.sniff import error_reason, sniff_format
from core.paths import atomic_write_bytes

# torch.save stores entries uncompressed; a large ratio only comes from a crafted archive.
_MAX_COMPRESSION_RATIO = 100
_MAX_ENTRIES = 100_000
_PICKLED_OBJECTS = (
    "the file contains pickled Python objects, not just tensors; "
    "save model.state_dict() with torch.save and upload that"
)


def load_state_dict_file(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, torch.Tensor]:
    """Load the flat ``name → tensor`` dict saved in ``path``, refusing anything else."""
    if sniff_format(path) != "state_dict":
        raise ModelRejected("the file is not a torch.save zip archive", code="unrecognised-format")
    require_file_within_cap(path.stat().st_size, max_bytes)
    _inspect_archive(path, max_bytes)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelRejected(_PICKLED_OBJECTS, code="pickled-objects") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelRejected(f"the archive is corrupt ({error_reason(err)})",
                            code="malformed") from None
    return _require_flat_tensor_dict(loaded)


def state_dict_to_safetensors(path: Path, dest: Path) -> None:
    """Re-store the state_dict at ``path`` as a safetensors file at ``dest`` (atomically)."""
    tensors = load_state_dict_file(path)
    # safetensors refuses tensors that share storage; independent copies are always safe.
    owned = {name: tensor.detach().clone().contiguous() for name, tensor in tensors.items()}
    atomic_write_bytes(dest, safetensors_bytes(owned))


def _inspect_archive(path: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ModelRejected(
            f"the zip archive is truncated or corrupt ({error_reason(err)})", code="truncated"
        ) from None
    if len(entries) > _MAX_ENTRIES:
        raise ModelRejected(f"the archive has {len(entries)} entries", code="zip-bomb")
    total = sum(entry.file_size for entry in entries)
    if total > max_bytes:
        raise ModelRejected(
            f"the archive expands to {mib(total)}, over the {mib(max_bytes)} limit",
            code="zip-bomb",
            details={"uncompressed_bytes": total, "max_bytes": max_bytes},
        )
    for entry in entries:
        if entry.file_size > _MAX_COMPRESSION_RATIO * max(entry.compress_size, 1):
            raise ModelRejected(
                f"archive entry {entry.filename!r} is compressed "
                f"{entry.file_size // max(entry.compress_size, 1)}:1, which only a zip bomb is",
                code="zip-bomb",
            )
    pickles = [entry.filename for entry in entries if entry.filename.endswith("data.pkl")]
    if len(pickles) != 1:
        raise ModelRejected(
            "the archive is not a torch.save file (expected exactly one data.pkl entry)",
            code="malformed",
        )


def _require_flat_tensor_dict(loaded: object) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict):
        raise ModelRejected(
            f"the file holds a {type(loaded).__name__}, not a state_dict; "
            "save model.state_dict() with torch.save",
            code="not-a-state-dict",
        )
    nested = [key for key, value in loaded.items() if isinstance(value, dict)]
    if nested:
        raise ModelRejected(
            f"the file holds nested dicts under {nested}; save model.state_dict() itself "
            "(a flat mapping from parameter names to tensors)",
            code="not-a-state-dict",
        )
    bad = [str(key) for key, value in loaded.items()
           if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ModelRejected(
            f"entries {bad[:10]} are not named tensors; save model.state_dict() itself",
            code="not-a-state-dict",
        )
    return dict(loaded)
