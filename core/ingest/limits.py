"""Size limits shared by every model-file reader."""

from __future__ import annotations

from core.errors import TooLarge

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Default cap on a model file and on the tensors it declares (512 MiB)."""


def mib(size: int) -> str:
    """``size`` bytes written for humans, e.g. ``'12.5 MiB'``."""
    return f"{size / (1024 * 1024):.1f} MiB"


def require_within_cap(declared: int, max_bytes: int, what: str) -> None:
    """Refuse ``what`` when it declares more than ``max_bytes`` bytes of tensor data."""
    if declared > max_bytes:
        raise TooLarge(
            f"{what} declares {mib(declared)} of tensor data, over the {mib(max_bytes)} limit; "
            "upload a smaller model",
            details={"declared_bytes": declared, "max_bytes": max_bytes},
        )


def require_file_within_cap(size: int, max_bytes: int) -> None:
    """Refuse files larger than the cap before reading them."""
    if size > max_bytes:
        raise TooLarge(
            f"the file is {mib(size)}, over the {mib(max_bytes)} limit",
            details={"file_bytes": size, "max_bytes": max_bytes},
        )
