"""Size limits shared by every model-file reader."""

from __future__ import annotations

import math

from core.errors import ModelRejected, TooLarge

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""Default cap on a model file and on the tensors it declares (512 MiB)."""

MAX_GRAPH_NODES = 20_000
"""Most operator nodes an ONNX graph may hold, subgraphs included.  Real classifiers have a
few hundred (ResNet-152 about 500); importing and canonicalising costs milliseconds per node,
so a graph of a million nodes is refused before any of that work starts."""

MAX_ACTIVATION_BYTES = 256 * 1024 * 1024
"""Cap on one intermediate tensor of one sample (256 MiB of float32).  The importer knows
every value's shape before anything runs, so a tiny file whose Pad or Conv would produce a
gigabyte-sized tensor is refused instead of run by pre-flight."""


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


def require_node_count_within(count: int, max_nodes: int = MAX_GRAPH_NODES) -> None:
    """Refuse a graph with more than ``max_nodes`` operator nodes (``count`` may stop at
    ``max_nodes + 1``: counting further is not needed to refuse)."""
    if count > max_nodes:
        raise ModelRejected(
            f"the ONNX graph has more than {max_nodes:,} nodes, the limit on one model; "
            "upload a smaller model",
            code="too-many-nodes", details={"max_nodes": max_nodes},
        )


def require_folding_within(size: int, max_bytes: int, what: str) -> None:
    """Refuse constant folding that would allocate more than ``max_bytes`` (checked from the
    shapes, before anything is allocated)."""
    if size > max_bytes:
        raise ModelRejected(
            f"{what} would produce {mib(size)} of constants, over the {mib(max_bytes)} limit "
            "on constant folding; upload a model whose constants are precomputed and smaller",
            code="folding-too-large", details={"folded_bytes": size, "max_bytes": max_bytes},
        )


def require_activation_within(sample_shape: tuple[int, ...], what: str,
                              max_bytes: int = MAX_ACTIVATION_BYTES) -> None:
    """Refuse an intermediate tensor of more than ``max_bytes`` float32 bytes per sample."""
    size = 4 * math.prod(int(d) for d in sample_shape)
    if size > max_bytes:
        raise ModelRejected(
            f"{what} would produce a tensor of shape {list(sample_shape)} per sample "
            f"({mib(size)}), over the {mib(max_bytes)} limit on one intermediate tensor",
            code="activation-too-large",
            details={"activation_bytes": size, "max_bytes": max_bytes},
        )
